"""Disposable real systemd hosts serving the demo Django app, for trying and testing djdeploy."""
