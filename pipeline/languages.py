"""Language tags: BCP 47 (job requests), ISO 639-2 (container metadata), Whisper's codes.

langcodes does the standardising (``ger``/``deu`` → ``de``, ``iw`` → ``he``, ``en-US`` → ``en``
as a primary subtag); Whisper's tokenizer names a few languages its own way, listed here.
"""

from __future__ import annotations

import functools

__all__ = ["primary", "same_language", "whisper_code"]

#: Whisper's codes where they differ from the standard primary subtag.
#: Detection this sure of another language overrides the job's ``language`` (speech to text).
LANGUAGE_OVERRIDE_PROBABILITY = 0.75
#: Detection of another language at least this sure (but under the override) keeps the job's
#: language with a ``language_uncertain`` warning on the report; without a job language, a
#: detection less sure than this is used with the same warning (it is a guess).
LANGUAGE_DOUBT_PROBABILITY = 0.5
_WHISPER_ALIASES = {"nb": "no", "jv": "jw", "fil": "tl", "yue": "zh"}
_UNDETERMINED = frozenset({"und", "mis", "mul", "zxx", ""})


@functools.lru_cache(maxsize=256)
def primary(tag: str | None) -> str | None:
    """The standardised primary language subtag of ``tag`` (None for none/undetermined)."""
    import langcodes

    if not tag or not tag.strip():
        return None
    try:
        language = langcodes.Language.get(langcodes.standardize_tag(tag.strip()))
    except (ValueError, LookupError):
        return None
    code = (language.language or "").lower()
    return None if code in _UNDETERMINED else code


def whisper_code(tag: str | None, supported: list[str] | tuple[str, ...]) -> str | None:
    """Whisper's code for ``tag`` if the model supports that language, else None."""
    code = primary(tag)
    if code is None:
        return None
    code = code if code in supported else _WHISPER_ALIASES.get(code, code)
    return code if code in supported else None


def same_language(a: str | None, b: str | None) -> bool:
    """Whether two tags name the same language (``de-AT`` and ``ger`` do)."""
    pa, pb = primary(a), primary(b)
    if pa is None or pb is None:
        return False
    return _WHISPER_ALIASES.get(pa, pa) == _WHISPER_ALIASES.get(pb, pb)
