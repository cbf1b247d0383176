"""Versioned prompt files: ``reasoning/prompts/<version>/<name>.md``, rendered into chat messages.

The version recorded with each result names the folder and a hash of the files of its set, so an edited prompt is
a new version even if the folder keeps its name. Two sets share a folder: the enrichment agents' (``ROLES``, about
one product) and the user reasoner's (``USER_ROLES``, about one user's recent items); ``{item}`` in a template is
the set's subject.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PROMPTS = Path(__file__).parent / "prompts"
DEFAULT_VERSION = "v1"
ROLES = ("system", "attributes", "usage", "audience", "needs", "critic", "summary")
USER_ROLES = ("user_system", "user_history", "user_needs", "user_attributes", "user_target")

Message = dict[str, str]


class PromptSet:
    def __init__(self, version: str = DEFAULT_VERSION, root: Path = PROMPTS, roles: tuple[str, ...] = ROLES) -> None:
        """``roles[0]`` is the set's system prompt."""
        folder = root / version
        missing = [role for role in roles if not (folder / f"{role}.md").is_file()]
        if missing:
            raise FileNotFoundError(f"prompt set {folder} lacks {', '.join(missing)}")
        self.templates = {role: (folder / f"{role}.md").read_text() for role in roles}
        self.system = roles[0]
        digest = hashlib.sha256("".join(self.templates[role] for role in roles).encode()).hexdigest()[:8]
        self.version = f"{version}-{digest}"

    def messages(self, role: str, item: str, steps: str = "", feedback: str = "") -> list[Message]:
        """System prompt plus the role's prompt filled with the item text, earlier steps and reviewer feedback."""
        user = self.templates[role].format(item=item, steps=steps or "(none yet)", feedback=feedback).strip()
        return [{"role": "system", "content": self.templates[self.system].strip()}, {"role": "user", "content": user}]
