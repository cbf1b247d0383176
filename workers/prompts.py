"""Versioned prompt files: ``workers/prompts/<version>/<name>.md``, rendered into chat messages.

The version recorded with each result names the folder and a hash of its files, so an edited prompt is a new
version even if the folder keeps its name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PROMPTS = Path(__file__).parent / "prompts"
DEFAULT_VERSION = "v1"
ROLES = ("system", "attributes", "usage", "audience", "needs", "critic", "summary")

Message = dict[str, str]


class PromptSet:
    def __init__(self, version: str = DEFAULT_VERSION, root: Path = PROMPTS) -> None:
        folder = root / version
        missing = [role for role in ROLES if not (folder / f"{role}.md").is_file()]
        if missing:
            raise FileNotFoundError(f"prompt set {folder} lacks {', '.join(missing)}")
        self.templates = {role: (folder / f"{role}.md").read_text() for role in ROLES}
        digest = hashlib.sha256("".join(self.templates[role] for role in ROLES).encode()).hexdigest()[:8]
        self.version = f"{version}-{digest}"

    def messages(self, role: str, item: str, steps: str = "", feedback: str = "") -> list[Message]:
        """System prompt plus the role's prompt filled with the item text, earlier steps and reviewer feedback."""
        user = self.templates[role].format(item=item, steps=steps or "(none yet)", feedback=feedback).strip()
        return [{"role": "system", "content": self.templates["system"].strip()}, {"role": "user", "content": user}]
