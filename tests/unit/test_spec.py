"""ServiceSpec validation (SPEC §2): defaults, shorthands, and everything it must refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from legato.spec import MIN_MEMORY, DeployConfig, HealthCheck, Resources, ServiceSpec, parse_memory

IMAGE = "legato-test/busybox:latest"


def spec(**fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": "web", "image": IMAGE, **fields})


def rejection(**fields: Any) -> list[dict[str, Any]]:
    """The errors of a spec that must not validate."""
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    return [dict(e) for e in caught.value.errors()]


def fields_of(errors: list[dict[str, Any]]) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in errors}


# defaults -----------------------------------------------------------------------------------


def test_minimal_spec_gets_documented_defaults() -> None:
    s = spec()
    assert s.domains == ("web.localhost",)
    assert s.project == "default"
    assert s.environment == "production"
    assert s.replicas == 1
    assert s.port == 8080
    assert s.internal is False
    assert s.routed is True
    assert s.health_check is None
    assert s.deploy.strategy == "rolling"
    assert (s.deploy.max_surge, s.deploy.max_unavailable) == (1, 0)


def test_default_health_check_is_get_slash() -> None:
    assert spec().health == HealthCheck(path="/")


def test_explicit_domains_replace_the_localhost_default() -> None:
    assert spec(domains=["Shop.Example.com", "shop.example.com", "www.example.com"]).domains == (
        "shop.example.com",
        "www.example.com",
    )


def test_internal_service_has_no_domains_and_is_not_routed() -> None:
    s = spec(internal=True)
    assert s.domains == ()
    assert s.routed is False


def test_spec_round_trips_through_json() -> None:
    s = spec(domain="a.example.com", health="/healthz", env={"A": 1}, replicas=3)
    assert ServiceSpec.model_validate_json(s.model_dump_json()) == s


def test_spec_is_frozen() -> None:
    with pytest.raises(ValidationError):
        spec().replicas = 5  # type: ignore[misc]


# shorthands ---------------------------------------------------------------------------------


def test_domain_shorthand_becomes_first_domain() -> None:
    s = spec(domain="shop.example.com", domains=["www.example.com", "shop.example.com"])
    assert s.domains == ("shop.example.com", "www.example.com")


def test_domain_shorthand_must_be_a_string() -> None:
    assert rejection(domain=["a.example.com"])


def test_health_shorthand_becomes_health_check_path() -> None:
    s = spec(health="/healthz")
    assert s.health_check == HealthCheck(path="/healthz")
    assert s.health.path == "/healthz"


def test_health_and_health_check_together_are_rejected() -> None:
    errors = rejection(health="/a", health_check={"path": "/b"})
    assert "either health or health_check" in errors[0]["msg"]


def test_env_scalars_become_strings() -> None:
    assert spec(env={"DEBUG": True, "WORKERS": 4, "RATIO": 0.5, "NAME": "x"}).env == {
        "DEBUG": "true", "WORKERS": "4", "RATIO": "0.5", "NAME": "x",
    }


# rejections ---------------------------------------------------------------------------------


def test_unknown_top_level_field_is_rejected() -> None:
    errors = rejection(replicass=2)
    assert errors[0]["type"] == "extra_forbidden"
    assert fields_of(errors) == {"replicass"}


def test_unknown_nested_field_is_rejected() -> None:
    errors = rejection(deploy={"strategy": "rolling", "surge": 2})
    assert errors[0]["type"] == "extra_forbidden"
    assert fields_of(errors) == {"deploy.surge"}


@pytest.mark.parametrize(
    "name",
    ["Web", "web_app", "-web", "web-", "-", "", "w" * 64, "web.app", "web app", "wéb"],
)
def test_bad_slug_names_are_rejected(name: str) -> None:
    assert fields_of(rejection(name=name)) == {"name"}


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "ab",
        "web",
        "web-2",
        "0api",
        "w" * 63,
    ],
)
def test_good_slug_names_are_accepted(name: str) -> None:
    assert spec(name=name).name == name


@pytest.mark.parametrize("field", ["project", "environment"])
def test_project_and_environment_are_slugs_too(field: str) -> None:
    assert fields_of(rejection(**{field: "Not A Slug"})) == {field}


@pytest.mark.parametrize("replicas", [-1, 101])
def test_replicas_out_of_range_are_rejected(replicas: int) -> None:
    assert fields_of(rejection(replicas=replicas)) == {"replicas"}


def test_zero_replicas_is_allowed() -> None:
    assert spec(replicas=0).replicas == 0


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("512Mi", 512 * 1024**2),
        ("1Gi", 1024**3),
        ("256M", 256 * 1000**2),
        ("1.5Gi", int(1.5 * 1024**3)),
        ("64MB", 64 * 1000**2),
        ("6Mi", MIN_MEMORY),
        ("268435456", 268_435_456),
        (268_435_456, 268_435_456),
        (" 128Mi ", 128 * 1024**2),
    ],
)
def test_parse_memory_units(quantity: str | int, expected: int) -> None:
    assert parse_memory(quantity) == expected


@pytest.mark.parametrize("quantity", ["100", "100B", 100, "5Mi", "1k"])
def test_parse_memory_below_6mi_is_too_small(quantity: str | int) -> None:
    with pytest.raises(ValueError, match="at least 6Mi"):
        parse_memory(quantity)


@pytest.mark.parametrize("quantity", ["lots", "512 Mib", "-512Mi", "1Gb", "Mi", "1e9", ""])
def test_parse_memory_rejects_garbage(quantity: str) -> None:
    with pytest.raises(ValueError, match="invalid memory quantity"):
        parse_memory(quantity)


def test_bad_memory_in_spec_is_rejected_and_good_one_exposes_bytes() -> None:
    assert fields_of(rejection(resources={"memory": "512MiB"})) == {"resources.memory"}
    assert fields_of(rejection(resources={"memory": "100"})) == {"resources.memory"}
    assert spec(resources={"memory": "512Mi"}).resources.memory_bytes == 512 * 1024**2
    assert Resources().memory_bytes is None


def test_shell_string_command_is_rejected() -> None:
    errors = rejection(command="httpd -f -p 8080")
    assert fields_of(errors) == {"command"}
    assert "argv list" in errors[0]["msg"]


@pytest.mark.parametrize("command", [[], [""]])
def test_command_must_name_a_program(command: list[str]) -> None:
    assert fields_of(rejection(command=command)) == {"command"}


def test_argv_command_is_kept() -> None:
    assert spec(command=["httpd", "-f", "-p", "8080"]).command == ["httpd", "-f", "-p", "8080"]


@pytest.mark.parametrize("key", ["1ABC", "MY-VAR", "A B", "", "FOO=BAR", "ÄPFEL"])
def test_bad_env_keys_are_rejected(key: str) -> None:
    assert fields_of(rejection(env={key: "x"})) == {"env"}


def test_good_env_keys_are_accepted() -> None:
    assert set(spec(env={"_X": "1", "lower_ok": "2", "A1": "3"}).env) == {"_X", "lower_ok", "A1"}


@pytest.mark.parametrize("key", ["legato.service", "legato.anything", ""])
def test_reserved_and_empty_labels_are_rejected(key: str) -> None:
    assert fields_of(rejection(labels={key: "x"})) == {"labels"}


def test_other_labels_are_accepted() -> None:
    assert spec(labels={"team": "shop", "com.example.tier": "web"}).labels["team"] == "shop"


@pytest.mark.parametrize("path", ["/data/../etc", "../data", "data", "/", "/a/../../b"])
def test_volume_path_traversal_and_relative_paths_are_rejected(path: str) -> None:
    assert fields_of(rejection(volumes=[{"name": "data", "path": path}])) == {"volumes.0.path"}


def test_volume_names_must_be_unique() -> None:
    errors = rejection(volumes=[{"name": "data", "path": "/a"}, {"name": "data", "path": "/b"}])
    assert "unique" in errors[0]["msg"]


def test_volume_with_absolute_path_is_accepted() -> None:
    assert spec(volumes=[{"name": "data", "path": "/var/lib/data"}]).volumes[0].path == "/var/lib/data"


def test_max_surge_and_max_unavailable_both_zero_is_rejected() -> None:
    errors = rejection(deploy={"max_surge": 0, "max_unavailable": 0})
    assert fields_of(errors) == {"deploy"}
    assert "cannot both be 0" in errors[0]["msg"]
    assert DeployConfig(max_surge=0, max_unavailable=1).max_surge == 0


@pytest.mark.parametrize("image", ["nginx alpine", "-rm", ""])
def test_bad_images_are_rejected(image: str) -> None:
    assert fields_of(rejection(image=image)) == {"image"}


@pytest.mark.parametrize("domain", ["exa mple.com", "-bad.example.com", "a..b", "ex_ample.com"])
def test_bad_domains_are_rejected(domain: str) -> None:
    assert fields_of(rejection(domains=[domain])) == {"domains"}


@pytest.mark.parametrize("path", ["healthz", "/health z"])
def test_health_path_must_be_absolute_without_spaces(path: str) -> None:
    assert fields_of(rejection(health=path)) == {"health_check.path"}


def test_scaling_min_above_max_is_rejected() -> None:
    assert fields_of(rejection(scaling={"min_replicas": 5, "max_replicas": 2})) == {"scaling"}
