"""Error buckets for reports, and the outcome classes of a sample."""

from __future__ import annotations

BUCKETS = ("IndexError", "TypeError", "ValueError", "ZeroDivisionError", "NameError", "AttributeError", "KeyError",
           "RecursionError", "SyntaxError", "AssertionError", "Timeout", "Other")
OUTCOMES = ("passed", "failed", "runtime_error", "syntax_error", "timeout", "memory_limit", "crashed", "sandbox_error")
# ``sandbox_error``: the sandbox failed (not the sample); retried once, never the model's fault
MODEL_OUTCOMES = OUTCOMES[:-1]

# Subclasses that read better under their parent's bucket; anything unlisted is "Other".
# MemoryError and kills by a resource limit are "Other": their outcome (memory_limit, crashed) says more.
_ALIASES = {"UnboundLocalError": "NameError", "IndentationError": "SyntaxError", "TabError": "SyntaxError",
            "ModuleNotFoundError": "Other", "StopIteration": "Other", "OverflowError": "Other",
            "UnicodeDecodeError": "ValueError", "UnicodeEncodeError": "ValueError", "JSONDecodeError": "ValueError"}


def bucket(exception: str | None) -> str | None:
    """The report bucket of an exception class name; ``None`` stays ``None`` (passed). ``Timeout`` is the sandbox's
    own bucket (the outcome ``timeout``), never an exception's: a candidate names its exceptions."""
    if not exception:
        return None
    if exception in BUCKETS and exception != "Timeout":
        return exception
    return _ALIASES.get(exception, "Other")


def outcome_of_exception(exception: str, compiling: bool = False, by_candidate: bool = False) -> str:
    """Outcome class for a sample whose first failure raised ``exception``; ``syntax_error`` only where the program
    did not compile (``compiling``: a SyntaxError raised by a call is the candidate's own, a runtime error), and
    ``failed`` only for the test's own failed check (``by_candidate``: an AssertionError the candidate's code raised,
    its own assert or a name it chose, is a runtime error: else any crash could pass as the mildest failure)."""
    if exception == "AssertionError":
        return "runtime_error" if by_candidate else "failed"
    if exception in ("SyntaxError", "IndentationError", "TabError"):
        return "syntax_error" if compiling else "runtime_error"
    if exception == "MemoryError":
        return "memory_limit"
    return "runtime_error"


def exception_name(name: str, builtin: str) -> str:
    """The name a record gives an exception the candidate's code raised, of a class named ``name`` whose nearest
    builtin exception class is ``builtin``: ``name``, unless the record's outcome or bucket (both decided by its name)
    would then be another than ``builtin``'s, then ``builtin``.  A class may be named anything: ``type('MemoryError',
    (Exception,), {})`` is no memory limit (``Exception``), while ``json.JSONDecodeError`` keeps its name."""
    if name == builtin or (bucket(name) == bucket(builtin)
                           and outcome_of_exception(name, by_candidate=True)
                           == outcome_of_exception(builtin, by_candidate=True)):
        return name
    return builtin
