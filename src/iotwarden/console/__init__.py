"""The analyst console: static HTML, JavaScript and CSS that ``iotwarden serve`` serves at ``/``."""
