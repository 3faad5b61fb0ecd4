"""The lab's host image: Debian bookworm with systemd, sshd, nginx and the demo Django project
under gunicorn, built once with debootstrap and cached under a key of its recipe.

Hosts run in network namespaces with no route to package registries, so every
package is baked in here: Debian packages by debootstrap, Python wheels downloaded on this
machine and installed into the image's venv without an index.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from djdeploy.lab.system import run

SUITE = "bookworm"
DEBIAN_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "iproute2",
    "procps",
    "curl",
    "openssh-server",
    "nginx-light",
    "ca-certificates",
]
# The demo app's Python side; gunicorn 27 brings the control socket that verify reads.
APP_REQUIREMENTS = ["Django>=5.2,<5.3", "gunicorn==27.0.1"]
# Timers and services that only cost boot time and memory on a disposable host.
MASKED_UNITS = [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "fstrim.timer",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-timesyncd.service",
]
RECIPE_VERSION = "3"

HERE = Path(__file__).parent
DEMO_DIR = HERE / "demo"
FILES_DIR = HERE / "files"

APP_ROOT = "/srv/demo"
APP_DIR = f"{APP_ROOT}/app"
APP_VENV = f"{APP_ROOT}/venv"
APP_DATA = f"{APP_ROOT}/data"
APP_USER = "demo"


def recipe_key() -> str:
    """A digest of everything that goes into the image, so a changed recipe builds anew."""
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, *DEBIAN_PACKAGES, *APP_REQUIREMENTS, *MASKED_UNITS):
        digest.update(part.encode() + b"\0")
    for path in sorted(_recipe_files()):
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _recipe_files() -> list[Path]:
    files = [p for p in FILES_DIR.rglob("*") if p.is_file()]
    files += [
        p
        for p in DEMO_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and p.name != "db.sqlite3"
    ]
    files.append(Path(__file__))
    return files


def ensure_image(images_dir: Path, log: Callable[[str], None]) -> Path:
    """Return the root file system of the current recipe, building it if it is not cached."""
    images_dir.mkdir(parents=True, exist_ok=True)
    key = recipe_key()
    rootfs = images_dir / key / "rootfs"
    with open(images_dir / ".build.lock", "w") as lock:
        # Two `lab up` calls at once must not build the same image twice.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (images_dir / key / "ready").exists():
            return rootfs
        log(f"building host image {key} (debootstrap, packages, venv; about two minutes, once)")
        started = time.monotonic()
        staging = images_dir / f"{key}.partial"
        _remove_tree(staging)
        try:
            _build(staging / "rootfs", log)
            (staging / "ready").write_text(f"{time.time():.0f}\n")
            _remove_tree(images_dir / key)
            staging.rename(images_dir / key)
        except BaseException:
            _remove_tree(staging)
            raise
        log(f"host image {key} built in {time.monotonic() - started:.0f} s")
        _remove_stale_images(images_dir, keep=key)
    return rootfs


def _build(root: Path, log: Callable[[str], None]) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    log("  debootstrap " + SUITE)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            SUITE,
            str(root),
        ],
        timeout=1200,
    )
    log("  app user, venv and demo project")
    _chroot(root, ["useradd", "--system", "--home-dir", APP_ROOT, "--shell", "/usr/sbin/nologin", APP_USER])
    _install_wheels(root)
    shutil.copytree(DEMO_DIR, root / APP_DIR.lstrip("/"), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / APP_DATA.lstrip("/")).mkdir(parents=True)
    _chroot(root, ["chown", "-R", f"{APP_USER}:{APP_USER}", APP_DATA])
    manage = [f"{APP_VENV}/bin/python", f"{APP_DIR}/manage.py"]
    app_env = ["env", f"DEMO_DB_PATH={APP_DATA}/db.sqlite3", "DJANGO_SECRET_KEY=image-build-only"]
    _chroot(root, [*app_env, *manage, "migrate", "--noinput"], user=APP_USER)
    _chroot(root, [*app_env, *manage, "seed_demo"], user=APP_USER)
    _chroot(root, [f"{APP_VENV}/bin/python", "-m", "compileall", "-q", APP_DIR])

    log("  systemd units, nginx and sshd")
    _install_file(root, "gunicorn.service", "/etc/systemd/system/gunicorn.service")
    _install_file(root, "nginx-demo.conf", "/etc/nginx/sites-available/demo")
    (root / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
    (root / "etc/nginx/sites-enabled/demo").symlink_to("/etc/nginx/sites-available/demo")
    _install_file(root, "sshd-lab.conf", "/etc/ssh/sshd_config.d/lab.conf")
    _chroot(root, ["systemctl", "enable", "gunicorn.service", "nginx.service", "ssh.service"])
    _chroot(root, ["systemctl", "mask", *MASKED_UNITS])
    # Per-host files (hostname, keys, the app's environment) are written at `lab up`.
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/demo").mkdir(mode=0o750, exist_ok=True)
    _chroot(root, ["chown", f"root:{APP_USER}", "/etc/demo"])
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _install_wheels(root: Path) -> None:
    with tempfile.TemporaryDirectory(dir=root / "tmp") as wheels:
        # Pure-Python wheels built for CPython 3.11, the same minor version as bookworm's.
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--dest", wheels, *APP_REQUIREMENTS],
            timeout=600,
        )
        inside = "/" + str(Path(wheels).relative_to(root))
        _chroot(root, ["python3", "-m", "venv", APP_VENV])
        _chroot(
            root,
            [f"{APP_VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links", inside, *APP_REQUIREMENTS],
        )


def _install_file(root: Path, name: str, dest: str, mode: int = 0o644) -> None:
    target = root / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FILES_DIR / name, target)
    target.chmod(mode)


def _chroot(root: Path, argv: list[str], user: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["chroot", *([f"--userspec={user}:{user}"] if user else []), str(root)]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    return run([*prefix, *argv], env=env, timeout=900)


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _remove_stale_images(images_dir: Path, keep: str) -> None:
    """Old recipes are dropped unless a running lab host still uses them as its lower layer."""
    in_use = _lower_dirs_in_use()
    for entry in images_dir.iterdir():
        if entry.is_dir() and entry.name != keep and not any(str(entry) in lower for lower in in_use):
            try:
                _remove_tree(entry)
            except OSError as exc:  # a busy image is left for the next build
                print(f"djdeploy: kept old image {entry}: {exc}", file=sys.stderr)


def _lower_dirs_in_use() -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line for line in mounts if line.startswith("overlay ")]

