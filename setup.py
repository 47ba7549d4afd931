"""Build hook (everything else is in pyproject.toml): ship the Hydra configs of the command line inside
the package. configs/ stays at the repository root, where it is edited; a wheel carries a copy as
``invscore/_configs``, which :func:`invscore.cli.compose.config_dir` falls back to when the package was
installed without its source tree."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "configs"
        if not getattr(self, "editable_mode", False) and src.is_dir():  # an editable install reads configs/ itself
            dst = Path(self.build_lib) / "invscore" / "_configs"
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
