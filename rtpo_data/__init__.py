"""rtpo-data: hint curricula for Reverse Thinking Policy Optimization.

Build a curriculum once (every trace tokenized once, every cut precomputed), then render the exact
prompt any row gets at any training step::

    import rtpo_data
    rtpo_data.build(rtpo_data.BuildConfig(source="gsm8k.jsonl", out="cur", tokenizer="offline:qwen3"))
    cur = rtpo_data.Curriculum.open("cur")
    cur.prompt(0, cur.stage_at(step=120, total_steps=500))
"""

from rtpo_data._version import __version__
from rtpo_data.build import BuildResult, build
from rtpo_data.config import BuildConfig
from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import ArtifactError, ConfigError, RtpoDataError, SourceError, TokenizerMismatchError
from rtpo_data.schedule import ScheduleConfig, keep_fraction, stage_at, stage_fractions

__all__ = [
    "ArtifactError",
    "BuildConfig",
    "BuildResult",
    "ConfigError",
    "Curriculum",
    "RtpoDataError",
    "ScheduleConfig",
    "SourceError",
    "TokenizerMismatchError",
    "__version__",
    "build",
    "keep_fraction",
    "stage_at",
    "stage_fractions",
]
