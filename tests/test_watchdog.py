"""The handler watchdog, in-process: its limit, its user_config, the Preprocessor a hang leaves half
alive, the ops config's watchdog_s, and every deployment given user_config able to take it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from ray import serve

from stack import serve_config
from stack.config import OPS_PATH, DeploymentOptions, load, parse
from stack.profile import PROFILES
from stack.serving.faults import FaultSpec, clear_faults, write_faults
from stack.serving.pipeline import Preprocessor
from stack.serving.settings import FaultSettings
from stack.serving.watchdog import Stuck, Watchdog, Watched
from tests.test_config import _raw, _write


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_raises_past_the_limit_and_not_before() -> None:
    clock = Clock()
    dog = Watchdog(limit_s=10, clock=clock)
    dog.check()  # nothing in flight
    with dog.track():
        clock.now = 5
        with dog.track():  # a younger one does not hide the oldest
            clock.now = 10
            dog.check()  # at the limit: not past it
            clock.now = 12.34
            with pytest.raises(Stuck, match=r"^watchdog: the oldest in-flight request has run 12\.3 s, past "
                                            r"10 s: the handler is stuck \(2 in flight\)$"):
                dog.check()
    assert dog.in_flight == 0
    dog.check()  # done: healthy again


def test_a_request_that_fails_or_is_cancelled_leaves_the_books() -> None:
    dog = Watchdog(limit_s=1)
    with pytest.raises(KeyError), dog.track():
        raise KeyError("boom")
    assert dog.in_flight == 0 and dog.oldest_age_s() is None


def test_off_when_none() -> None:
    clock = Clock()
    dog = Watchdog(limit_s=None, clock=clock)
    with dog.track():
        clock.now = 1e6
        dog.check()


def test_user_config_sets_and_clears_the_limit() -> None:
    dog = Watchdog()
    dog.configure({"watchdog_s": 10})
    assert dog.limit_s == 10.0
    dog.configure({})  # no key: unchanged
    assert dog.limit_s == 10.0
    dog.configure({"watchdog_s": None})
    assert dog.limit_s is None
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="watchdog_s must be a number of seconds > 0, or null"):
            dog.configure({"watchdog_s": bad})


def test_watched_refuses_a_user_config_key_it_does_not_know() -> None:
    pre = Preprocessor.func_or_class()
    pre.reconfigure({"watchdog_s": 3})
    assert pre.watchdog.limit_s == 3
    with pytest.raises(ValueError, match=r"user_config keys \['max_batch_size'\] unknown"):
        pre.reconfigure({"max_batch_size": 3})


def test_a_hung_preprocessor_is_half_alive_until_the_watchdog_trips(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hang in the hook: the loop stays free (check_health answers), the request never finishes,
    and only the watchdog turns that into a failed check. Clearing the fault lets it finish."""
    ctx = SimpleNamespace(app_name="classify", deployment="Preprocessor",
                          replica_id=SimpleNamespace(unique_id="r1"))
    monkeypatch.setattr(serve, "get_replica_context", lambda: ctx)
    path = tmp_path / "faults.json"
    write_faults(path, [FaultSpec(id="half-alive", kind="hang", app="classify", deployment="Preprocessor",
                                  replica="r1")])
    pre = Preprocessor.func_or_class(FaultSettings(control_file=str(path)))
    pre.faults.poll_s = 0.01
    pre.reconfigure({"watchdog_s": 0.1})

    async def scenario() -> dict[str, Any]:
        request = asyncio.create_task(pre.preprocess("  hello\x00  world "))
        await asyncio.sleep(0.03)
        await pre.check_health()  # hung, but younger than the limit: healthy
        await asyncio.sleep(0.12)
        with pytest.raises(Stuck, match=r"past 0\.1 s"):
            await pre.check_health()
        pre.reconfigure({"watchdog_s": None})  # chaos's half-alive-unwatched: the check passes
        await pre.check_health()
        clear_faults(path)
        result = await asyncio.wait_for(request, timeout=1)
        return {"result": result, "in_flight": pre.watchdog.in_flight}

    assert asyncio.run(scenario()) == {"result": {"text": "hello world", "chars": 16}, "in_flight": 0}


def test_preprocessor_without_faults_has_no_hook() -> None:
    pre = Preprocessor.func_or_class()
    assert pre.faults is None
    assert asyncio.run(pre.preprocess("a  b")) == {"text": "a b", "chars": 4}


# --- the ops config --------------------------------------------------------------------------------

def test_watchdog_s_reaches_user_config_only() -> None:
    opts = DeploymentOptions(health_check_period_s=2, watchdog_s=10)
    assert opts.user_config() == {"watchdog_s": 10}
    assert "watchdog_s" not in opts.to_serve() and opts.to_serve()["user_config"] == {"watchdog_s": 10}
    assert DeploymentOptions().user_config() is None


@pytest.mark.parametrize("value", [0, -5])
def test_watchdog_s_must_be_positive_and_says_why(value: float) -> None:
    with pytest.raises(ValidationError, match=r"watchdog_s must be > 0 .*health check fails.*leave it out"):
        DeploymentOptions(watchdog_s=value)


def test_llm_deployments_take_no_watchdog(tmp_path: Path) -> None:
    raw = _raw()
    raw["profiles"]["cpu"]["llm"]["models"][0]["deployment"]["watchdog_s"] = 10
    with pytest.raises(ValidationError, match=r"ray\.serve\.llm's have no watchdog"):
        parse(_write(tmp_path, raw))


def test_profiles_set_the_preprocessor_watchdog_and_fault_injection() -> None:
    ops = parse(OPS_PATH)
    cpu, gpu = ops.profile("cpu"), ops.profile("gpu")
    assert cpu.fault_injection and not gpu.fault_injection
    assert cpu.deployment("classify", "Preprocessor").watchdog_s == 10
    assert gpu.deployment("classify", "Preprocessor").watchdog_s == 30
    # The gpu Preprocessor's own block must not leak the watchdog to the deployments it shares options with.
    assert gpu.deployment("classify", "Classifier").watchdog_s is None


def test_fault_injection_defaults_off(tmp_path: Path) -> None:
    raw = _raw()
    del raw["profiles"]["cpu"]["fault_injection"]
    assert not parse(_write(tmp_path, raw)).profile("cpu").fault_injection


def _classes(app: Any) -> dict[str, type]:
    """Deployment name -> class, for every deployment an Application binds."""
    from ray.serve.deployment import Application

    found, todo = {}, [app]
    while todo:
        deployment = todo.pop()._bound_deployment
        found[deployment.name] = deployment.func_or_class
        todo.extend(a for a in [*deployment.init_args, *deployment.init_kwargs.values()]
                    if isinstance(a, Application))
    return found


@pytest.mark.parametrize("profile", PROFILES)
def test_every_user_config_has_a_deployment_that_takes_it(profile: str) -> None:
    """Serve refuses user_config for a class without reconfigure(); watchdog_s needs the watchdog."""
    from stack.serving import apps

    builders = {"embed": apps.embed_app, "classify": apps.classify_app, "predict": apps.predict_app}
    watched = []
    for app in serve_config.build(load(), profile)["applications"][1:]:
        classes = _classes(builders[app["name"]](app["args"]))
        for entry in app["deployments"]:
            user_config = entry.get("user_config")
            if not user_config:
                continue
            cls = classes[entry["name"]]
            assert callable(getattr(cls, "reconfigure", None)), f"{app['name']}/{entry['name']}"
            if "watchdog_s" in user_config:
                assert issubclass(cls, Watched), f"{app['name']}/{entry['name']} has no watchdog"
                watched.append(entry["name"])
    assert "Preprocessor" in watched
