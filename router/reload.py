"""Hot reload: poll the mtimes of the config file, the profiles file and the accuracy predictor the profiles
name; apply a good edit, keep the last good one otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from mesh.config import MeshConfig, load_mesh
from router.profiles import Profiles, load_profiles

log = logging.getLogger("qarr.router")

Apply = Callable[[MeshConfig, Profiles], Awaitable[None]]


def load_both(config_path: str | Path) -> tuple[MeshConfig, Profiles]:
    """The config file and the profiles file it names (empty profiles when it names none)."""
    config = load_mesh(config_path)
    profiles = load_profiles(config.profiles) if config.profiles else Profiles()
    return config, profiles


def _stamp(path: str | Path | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Reloader:
    def __init__(self, config_path: str | Path, profiles_path: str, apply: Apply, interval_s: float = 0.5,
                 predictor_path: str | Path | None = None) -> None:
        self.config_path = config_path
        self.profiles_path = profiles_path
        self.predictor_path = predictor_path
        self.apply = apply
        self.interval_s = interval_s
        self._seen = self._stamps()
        self.reloads = 0  # good edits applied
        self.rejected = 0  # broken edits kept out

    def _stamps(self):
        return _stamp(self.config_path), _stamp(self.profiles_path), _stamp(self.predictor_path)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            stamps = self._stamps()
            if stamps == self._seen:
                continue
            self._seen = stamps
            try:
                config, profiles = load_both(self.config_path)
            except Exception as e:  # any broken edit (YAML, schema, missing file): keep what runs
                self.rejected += 1
                log.error("config reload failed, keeping the last good config: %s", e)
                continue
            await self.apply(config, profiles)
            self.profiles_path = config.profiles
            self.predictor_path = profiles.predictor_path
            self.interval_s = config.reload_interval_s
            self._seen = self._stamps()
            self.reloads += 1
            predictor = profiles.accuracy_predictor
            log.info("config reloaded from %s (profiles %s, accuracy predictor %s)", self.config_path,
                     config.profiles or "none", predictor.id if predictor else "none")
