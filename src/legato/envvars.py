"""How a service's environment is put together (pure): project variables, overridden by the
environment's, overridden by the service spec's; then every `${secrets.KEY}` replaced by the
project's secret. A reference to a missing secret is an error, never an empty value."""

from __future__ import annotations

import re
from collections.abc import Mapping

from legato.errors import LegatoError

SECRET_REFERENCE = re.compile(r"\$\{secrets\.([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigUnresolved(LegatoError):
    """A deployment's configuration cannot be put together: it must not run."""

    status = 422
    code = "CONFIG_UNRESOLVED"


def references(env: Mapping[str, str]) -> set[str]:
    """The secret keys the values refer to."""
    return {key for value in env.values() for key in SECRET_REFERENCE.findall(value)}


def resolve(layers: list[Mapping[str, str]], secrets: Mapping[str, str]) -> dict[str, str]:
    """Merge `layers` (later ones win) and substitute secrets; errors name every missing key
    (and never a value)."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    missing = sorted(references(merged) - set(secrets))
    if missing:
        users = sorted(k for k, v in merged.items() if set(SECRET_REFERENCE.findall(v)) & set(missing))
        raise ConfigUnresolved(
            f"secret{'s' if len(missing) > 1 else ''} {', '.join(missing)} not set "
            f"(referenced by {', '.join(users)})", details={"missing": missing, "variables": users})
    return {key: SECRET_REFERENCE.sub(lambda m: secrets[m.group(1)], value)
            for key, value in merged.items()}
