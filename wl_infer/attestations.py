"""Whether an attestation on the board is what it claims: signed by its verifier, about this item and board.

Anyone can write a file under `attestations/`, so a verdict counts only when its signature checks against
one of the verifier's registered keys (now or rotated out) over this board and item, and it names the
verifier whose path it sits under. Every place that shows or uses an attestation asks here first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from board.api import TreeView, known_addresses
from wl_infer.signing import recover_signer


@dataclass(frozen=True)
class AttestationCheck:
    """`valid`: the signature is the verifier's; `stale`: it attests a completion that is no longer live."""

    valid: bool
    problem: str | None = None
    stale: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"signature_valid": self.valid, "problem": self.problem, "stale": self.stale}


def check_attestation(view: TreeView, item_id: str, verifier: str, att: Any) -> AttestationCheck:
    """Check one attestation record found at attestations/<item>/<verifier>.json."""
    if not isinstance(att, dict):
        return AttestationCheck(False, "the attestation is not a JSON object")
    board_id = str(view.meta().get("board_id", ""))
    if att.get("verifier") != verifier:
        return AttestationCheck(False, f"it names verifier {att.get('verifier')!r}, not {verifier!r}")
    if att.get("item_id") != item_id:
        return AttestationCheck(False, f"it attests item {att.get('item_id')!r}, not {item_id}")
    if att.get("board_id") != board_id:
        return AttestationCheck(False, "it was made for another board")
    rig = view.rig(verifier)
    if rig is None:
        return AttestationCheck(False, f"{verifier} is not a registered rig")
    signer = recover_signer("attestation", att, {"board_id": board_id, "item_id": item_id})
    if signer is None:
        return AttestationCheck(False, "the signature is missing or malformed")
    if signer.lower() not in known_addresses(rig):
        return AttestationCheck(False, f"the signature is not {verifier}'s registered key")
    comp = view.completion(item_id)
    stale = comp is not None and att.get("completion_id") != comp.id
    return AttestationCheck(True, "it attests an earlier completion" if stale else None, stale)


def checked_attestations(view: TreeView, item_id: str) -> dict[str, tuple[dict[str, Any], AttestationCheck]]:
    """Every attestation of the item with its check, by verifier."""
    return {who: (att, check_attestation(view, item_id, who, att)) for who, att in view.attestations(item_id).items()}
