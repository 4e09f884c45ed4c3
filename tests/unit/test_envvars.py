"""Putting a service's environment together: layered variables, then `${secrets.KEY}`."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from legato.envvars import ConfigUnresolved, references, resolve

# merging ------------------------------------------------------------------------------------


def test_later_layers_win_project_then_environment_then_service() -> None:
    project = {"LEVEL": "project", "LOG": "info", "ONLY_PROJECT": "p"}
    environment = {"LEVEL": "environment", "LOG": "debug", "ONLY_ENV": "e"}
    service = {"LEVEL": "service", "ONLY_SERVICE": "s"}
    assert resolve([project, environment, service], {}) == {
        "LEVEL": "service", "LOG": "debug", "ONLY_PROJECT": "p", "ONLY_ENV": "e", "ONLY_SERVICE": "s",
    }


def test_an_empty_value_in_a_later_layer_still_overrides() -> None:
    assert resolve([{"DEBUG": "1"}, {"DEBUG": ""}], {}) == {"DEBUG": ""}


def test_no_layers_give_an_empty_environment() -> None:
    assert resolve([], {"UNUSED": "x"}) == {}


def test_resolve_leaves_its_inputs_unchanged() -> None:
    project, service = {"A": "${secrets.S}"}, {"B": "2"}
    resolve([project, service], {"S": "secret"})
    assert project == {"A": "${secrets.S}"}
    assert service == {"B": "2"}


# secrets ------------------------------------------------------------------------------------


def test_a_secret_reference_is_replaced_by_the_secret() -> None:
    env = resolve([{"DB_PASSWORD": "${secrets.DB_PASSWORD}"}], {"DB_PASSWORD": "hunter2"})
    assert env == {"DB_PASSWORD": "hunter2"}


def test_several_references_in_one_value_are_all_replaced() -> None:
    env = resolve([{"DATABASE_URL": "postgres://${secrets.USER}:${secrets.PASS}@db/${secrets.USER}"}],
                  {"USER": "app", "PASS": "hunter2"})
    assert env == {"DATABASE_URL": "postgres://app:hunter2@db/app"}


def test_references_in_project_level_values_are_replaced_too() -> None:
    env = resolve([{"API_KEY": "${secrets.API_KEY}"}, {"MODE": "staging"}, {"PORT": "8080"}],
                  {"API_KEY": "k-123"})
    assert env == {"API_KEY": "k-123", "MODE": "staging", "PORT": "8080"}


def test_secrets_that_no_value_refers_to_are_not_added() -> None:
    assert resolve([{"A": "1"}], {"DB_PASSWORD": "hunter2"}) == {"A": "1"}


def test_a_secret_value_is_inserted_literally_and_not_expanded_again() -> None:
    secrets = {"OUTER": r"${secrets.INNER} \1 \g<0> $&", "INNER": "should-not-appear"}
    env = resolve([{"X": "${secrets.OUTER}"}], secrets)
    assert env == {"X": r"${secrets.INNER} \1 \g<0> $&"}


def test_a_reference_overridden_by_a_later_layer_needs_no_secret() -> None:
    env = resolve([{"DB_PASSWORD": "${secrets.MISSING}"}, {"DB_PASSWORD": "plain"}], {})
    assert env == {"DB_PASSWORD": "plain"}


@pytest.mark.parametrize("value", [
    "$secrets.X",
    "${secret.X}",
    "${SECRETS.X}",
    "${ secrets.X }",
    "${secrets.}",
    "${secrets.1X}",
    "${secrets.X",
    "{secrets.X}",
    "${env.X}",
])
def test_values_that_only_look_like_references_are_left_alone(value: str) -> None:
    assert references({"V": value}) == set()
    assert resolve([{"V": value}], {"X": "hunter2"}) == {"V": value}


# missing secrets ----------------------------------------------------------------------------


def test_a_missing_secret_is_an_error_naming_the_key_and_its_users() -> None:
    layers: list[Mapping[str, str]] = [
        {"DB_PASSWORD": "${secrets.DB_PASSWORD}", "PLAIN": "visible-value"},
        {"DATABASE_URL": "postgres://app:${secrets.DB_PASSWORD}@db/app"},
        {"API": "${secrets.API_KEY}"},
    ]
    with pytest.raises(ConfigUnresolved) as caught:
        resolve(layers, {"API_KEY": "k-123"})
    error = caught.value
    assert (error.status, error.code) == (422, "CONFIG_UNRESOLVED")
    assert error.details == {"missing": ["DB_PASSWORD"], "variables": ["DATABASE_URL", "DB_PASSWORD"]}
    assert "DB_PASSWORD" in str(error)
    assert "DATABASE_URL" in str(error)
    assert "API" not in error.details["variables"]


def test_every_missing_secret_is_named_at_once() -> None:
    with pytest.raises(ConfigUnresolved) as caught:
        resolve([{"A": "${secrets.ONE}", "B": "${secrets.TWO}-${secrets.ONE}", "C": "c"}], {})
    assert caught.value.details == {"missing": ["ONE", "TWO"], "variables": ["A", "B"]}
    assert "secrets ONE, TWO not set" in str(caught.value)


def test_a_missing_secret_error_never_contains_any_value() -> None:
    layers: list[Mapping[str, str]] = [
        {"DATABASE_URL": "postgres://app:${secrets.DB_PASSWORD}@db-host-internal/app"},
        {"TOKEN": "tok-${secrets.API_KEY}-visible-suffix", "PLAIN": "plain-value-xyz"},
    ]
    secrets = {"API_KEY": "k-123-super-secret"}
    with pytest.raises(ConfigUnresolved) as caught:
        resolve(layers, secrets)
    error = caught.value
    shown = " ".join([str(error), error.message, repr(error.details), repr(error.args)])
    values = [v for layer in layers for v in layer.values()] + list(secrets.values())
    for fragment in [*values, "postgres://", "db-host-internal", "visible-suffix", "k-123"]:
        assert fragment not in shown


def test_references_lists_every_key_referred_to_once() -> None:
    env = {"A": "${secrets.ONE}", "B": "${secrets.TWO}/${secrets.ONE}", "C": "plain", "D": ""}
    assert references(env) == {"ONE", "TWO"}
    assert references({}) == set()
