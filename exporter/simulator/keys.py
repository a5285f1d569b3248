"""The keys and tokens the simulator accepts right now, so tests can rotate, expire and disable them.

Like the real gateway, a request is accepted only with a key that is enabled and not expired (and the
security token that belongs to it), or an IAM token that has not expired. The ring starts with the
settings' AK/SK (label `initial`, with `EXPORTER_SECURITY_TOKEN` when set) and `EXPORTER_AUTH_TOKEN` (never
expiring); keys are added (`POST /_sim/keys`) and disabled (`POST /_sim/keys/LABEL/disable`) while the
simulator runs, the metadata service and IAM mint temporary keys, IAM issues tokens, and `POST
/_sim/tokens/expire` ends every issued token at once. Unscoped tokens (IAM's answer to a workload's id
token) are kept apart: they buy temporary keys, and DLI does not accept them. Keys are known by a label
everywhere outside this module (counters, control answers), never by their values.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["IssuedToken", "KeyRing", "SimKey"]

_PRUNE_AFTER = 300.0  # expired keys and tokens are forgotten this long after they expired


@dataclass(slots=True, repr=False)
class SimKey:
    """One access key pair the simulator knows."""

    label: str
    ak: str
    sk: str
    security_token: str | None = None
    expires_at: float | None = None
    enabled: bool = True

    def __repr__(self) -> str:
        return f"SimKey({self.label}, enabled={self.enabled}, expires_at={self.expires_at})"

    def valid(self, now: float) -> bool:
        return self.enabled and (self.expires_at is None or now < self.expires_at)


@dataclass(slots=True, repr=False)
class IssuedToken:
    """An IAM token handed out by the simulated IAM (or configured), and its project scope."""

    expires_at: float | None
    project_id: str | None = None


@dataclass(slots=True)
class KeyRing:
    """Keys by AK and tokens by value; `used` counts accepted requests by key label (or `token`)."""

    keys: dict[str, SimKey] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict, repr=False)
    used: Counter[str] = field(default_factory=Counter)
    minted: int = 0
    sessions: dict[str, float] = field(default_factory=dict, repr=False)  # metadata session tokens
    unscoped: dict[str, float] = field(default_factory=dict, repr=False)  # IAM's, for an id token

    def add(
        self,
        ak: str,
        sk: str,
        *,
        label: str | None = None,
        security_token: str | None = None,
        expires_at: float | None = None,
    ) -> SimKey:
        """Accept this key pair (replacing one with the same AK); its label is given or made up."""
        if not ak or not sk:
            raise ValueError("a key needs an AK and an SK")
        key = SimKey(label or f"key-{len(self.keys) + 1}", ak, sk, security_token or None, expires_at)
        if any(other.label == key.label and other.ak != ak for other in self.keys.values()):
            raise ValueError(f"label {key.label!r} is taken")
        self.keys[ak] = key
        return key

    def mint(self, now: float, ttl: float, *, by: str = "metadata") -> SimKey:
        """New temporary keys with their security token, valid for `ttl` seconds, labelled `BY-N` (the
        metadata service's, or IAM's for a token: `securitytoken`)."""
        self.prune(now)
        self.minted += 1
        return self.add(
            "TMP" + secrets.token_hex(10).upper(),
            secrets.token_urlsafe(30),
            label=f"{by}-{self.minted}",
            security_token=secrets.token_urlsafe(48),
            expires_at=now + ttl,
        )

    def disable(self, label: str) -> bool:
        found = [key for key in self.keys.values() if key.label == label]
        for key in found:
            key.enabled = False
        return bool(found)

    def find(self, ak: str, now: float) -> SimKey | None:
        """The key of this AK if it is valid now (compared in constant time)."""
        for known, key in self.keys.items():
            if hmac.compare_digest(known.encode(), ak.encode()):
                return key if key.valid(now) else None
        return None

    def issue_token(self, now: float, ttl: float, project_id: str | None) -> tuple[str, float]:
        self.prune(now)
        token = "MII" + secrets.token_urlsafe(96)
        self.tokens[token] = IssuedToken(now + ttl, project_id)
        return token, now + ttl

    def accept_token(self, token: str, now: float) -> IssuedToken | None:
        for known, issued in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                valid = issued.expires_at is None or now < issued.expires_at
                return issued if valid else None
        return None

    def expire_tokens(self, now: float) -> int:
        """End every issued token now (a configured one too); how many were still valid."""
        alive = [
            issued for issued in self.tokens.values() if issued.expires_at is None or now < issued.expires_at
        ]
        for issued in alive:
            issued.expires_at = now
        return len(alive)

    def prune(self, now: float) -> None:
        """Forget minted keys and tokens long expired, so months of rotation keep the ring small."""
        old = now - _PRUNE_AFTER
        self.keys = {ak: k for ak, k in self.keys.items() if k.expires_at is None or k.expires_at > old}
        self.tokens = {t: i for t, i in self.tokens.items() if i.expires_at is None or i.expires_at > old}
        self.sessions = {token: until for token, until in self.sessions.items() if until > old}
        self.unscoped = {token: until for token, until in self.unscoped.items() if until > old}

    def snapshot(self) -> dict[str, object]:
        """What `GET /_sim/keys` shows: labels and states, never a value."""
        return {
            "keys": [
                {
                    "label": k.label,
                    "enabled": k.enabled,
                    "expires_at": k.expires_at,
                    "temporary": bool(k.security_token),
                }
                for k in self.keys.values()
            ],
            "tokens": len(self.tokens),
            "used": dict(self.used),
        }
