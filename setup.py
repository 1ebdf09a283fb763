"""Build hook (metadata lives in setup.cfg): ship the top-level ``device_profiles/`` folder - device
profile YAMLs and the latency tables measured for them - inside the package as
``amc_mobile/device_profiles``, so a non-editable install finds them from any working directory
(``amc_mobile.latency.profiles.PACKAGE_PROFILES``). A checkout keeps using the top-level folder."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_SUFFIXES = {".yaml", ".csv", ".json", ".md"}


class BuildPyWithProfiles(build_py):
    """``build_py`` plus a copy of the profiles and their tables (no lock files, no scratch folders)."""

    def run(self) -> None:
        super().run()
        src = Path(__file__).resolve().parent / "device_profiles"
        dest = Path(self.build_lib) / "amc_mobile" / "device_profiles"
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if f.is_file() and f.suffix in SHIPPED_SUFFIXES and not any(p.startswith(".") for p in rel.parts):
                target = dest / rel
                self.mkpath(str(target.parent))
                self.copy_file(str(f), str(target))


setup(cmdclass={"build_py": BuildPyWithProfiles})
