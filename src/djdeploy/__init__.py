"""djdeploy: size, change and undo Gunicorn settings for Django hosts, safely."""

__version__ = "0.1.0"
