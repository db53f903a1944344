"""The runbooks: one per alert and per failure case, complete, safe to diagnose with, and holding the
steps the chaos experiments call. No stack needed."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema

from runbooks import execute
from runbooks.book import RUNBOOKS_DIR, SECTIONS, Runbook, Step, load, names
from stack import ROOT
from stack.tools import cli

FAILURE_CASES = ("OOMFailureSpiral", "GPUMemoryFragmentation", "NCCLErrors", "RayServiceFailedState",
                 "BadModelUpdate", "HeadNodePartition", "ServeAutoscalerOscillation")

# Steps chaos/experiments call by name: runbook -> kind:name.
CHAOS_STEPS = {
    "OOMFailureSpiral": ("diagnose:kills", "diagnose:replica-memory", "mitigate:limit-load"),
    "ServeReplicaOOMKilled": ("diagnose:kills", "mitigate:limit-load"),
    "HeadNodePartition": ("diagnose:gcs", "diagnose:data-plane", "mitigate:wait-gcs"),
    "RayGCSUnreachable": ("diagnose:gcs", "diagnose:data-plane", "mitigate:wait-gcs"),
    "ServeAutoscalerOscillation": ("diagnose:target-changes", "mitigate:damp"),
    "ServeReplicaRestarts": ("diagnose:deaths", "mitigate:confirm-recovered"),
    "ServeReplicaUnhealthy": ("diagnose:health-checks", "mitigate:confirm-recovered"),
    "ServeDeploymentFailed": ("diagnose:serve-status", "mitigate:rollback"),
    "BadModelUpdate": ("diagnose:serve-status", "mitigate:rollback"),
}

# Commands a diagnosis step must never run: they change the stack, the cluster or the files.
MUTATING = re.compile(r"""
    \bserve\s+(deploy|run|shutdown|start|build)\b
  | \bray\s+(stop|start|up|down|kill|submit|job\s+(submit|stop|delete))\b
  | (^|[\s;&|(`])(sudo|kill|pkill|killall|rm|rmdir|mv|cp|dd|truncate|shred|chmod|chown|ln
                  |systemctl|service|reboot|shutdown|iptables|nft|tc|tee|sed\s+-i)(\s|$)
  | \bserveops\s+(tune|rollback)\b
  | \bkubectl\b[^\n|;&]*?\s(apply|create|delete|patch|scale|rollout|edit|replace|set|label|annotate
                            |drain|cordon|uncordon|taint|cp|run|expose|autoscale)\b
  | \bcurl\b[^\n]*(-X\s*|--request\s+)(POST|PUT|DELETE|PATCH)
  | \bredis-cli\b[^\n]*\b(flushall|flushdb|del|set|config|shutdown|debug)\b
  | \bmake\b | \bpython\b[^\n]*\s-\s*<<
""", re.X | re.I)
# A redirect into a file (not /dev/null, not another descriptor).
REDIRECT = re.compile(r"(?<![<>])>{1,2}\s*(?!&|/dev/null)[^\s&|;)]")


def books() -> list[Runbook]:
    return [load(name) for name in names()]


def alert_names() -> set[str]:
    rules = yaml.safe_load((ROOT / "alerts" / "serveops.rules.yaml").read_text())
    return {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}


def literal_free(code: str) -> str:
    """The step's code without single-quoted text and without double-quoted text that runs nothing."""
    code = re.sub(r"'[^']*'", "''", code)
    return re.sub(r'"[^"$`]*(?:\$(?!\()[^"$`]*)*"', '""', code)


def test_every_alert_has_a_runbook() -> None:
    alerts = alert_names()
    assert len(alerts) == 18
    missing = sorted(a for a in alerts if not (RUNBOOKS_DIR / f"{a}.md").exists())
    assert not missing, missing


def test_every_failure_case_has_a_runbook() -> None:
    assert set(FAILURE_CASES) <= set(names())


def test_nothing_but_alerts_and_failure_cases() -> None:
    assert set(names()) == alert_names() | set(FAILURE_CASES)


@pytest.mark.parametrize("book", books(), ids=lambda b: b.name)
def test_runbook_is_complete(book: Runbook) -> None:
    assert book.title == book.name
    for section in SECTIONS:
        assert book.sections.get(section, "").strip(), f"{book.name}: empty or missing ## {section}"
    assert "Stub" not in (RUNBOOKS_DIR / f"{book.name}.md").read_text()
    kinds = {s.kind for s in book.steps}
    assert "diagnose" in kinds, f"{book.name}: no diagnose step"
    assert kinds & {"mitigate", "k8s-mitigate"}, f"{book.name}: no mitigation step"
    for step in book.steps:
        assert step.why, f"{book.name}: {step.kind}:{step.name} has no paragraph saying why"
        assert step.code.strip()


@pytest.mark.parametrize("book", books(), ids=lambda b: b.name)
def test_steps_sit_in_their_section(book: Runbook) -> None:
    text = (RUNBOOKS_DIR / f"{book.name}.md").read_text()
    diagnosis = text[text.index("## Diagnosis"):text.index("## Mitigation")]
    for step in book.steps:
        if step.kind.endswith("mitigate"):
            assert f"```sh {step.kind}:{step.name}" not in diagnosis, f"{book.name}: {step.name}"


@pytest.mark.parametrize("book", books(), ids=lambda b: b.name)
def test_steps_are_valid_bash_and_python(book: Runbook) -> None:
    for step in book.steps:
        checked = subprocess.run(["bash", "-n", "-c", step.code], capture_output=True, text=True)
        assert checked.returncode == 0, f"{book.name} {step.name}: {checked.stderr}"
        for body in re.findall(r"<<'PY'\n(.*?)\nPY$", step.code, re.S | re.M):
            compile(body, f"{book.name}:{step.name}", "exec")


def diagnosis_steps() -> list[tuple[str, Step]]:
    return [(b.name, s) for b in books() for s in b.steps if not s.mutates]


def step_id(value: str | Step) -> str:
    return value if isinstance(value, str) else value.name


@pytest.mark.parametrize(("book", "step"), diagnosis_steps(), ids=step_id)
def test_diagnosis_only_reads(book: str, step: Step) -> None:
    code = literal_free(step.code)
    found = MUTATING.search(code) or REDIRECT.search(code)
    assert not found, f"{book} {step.kind}:{step.name} runs {found.group(0)!r}"


@pytest.mark.parametrize("snippet", [
    "serve deploy x.yaml", "ray stop", "kill -9 123", "pkill -f ray", "rm -rf /tmp/x",
    "serveops tune a b c=1", "serveops rollback", "kubectl delete pod x", "kubectl -n s scale rs/x",
    "curl -X POST u", "curl -s --request DELETE u", "echo x > /tmp/f", "x >>f", "a && kubectl patch x",
])
def test_the_denylist_catches(snippet: str) -> None:
    code = literal_free(snippet)
    assert MUTATING.search(code) or REDIRECT.search(code), snippet


@pytest.mark.parametrize("snippet", [
    "serveops promql 'x > 0'", "ray status >/dev/null 2>&1", "ray list actors", "serve status",
    'echo "found: no kill here, rm nothing"', "kubectl get pods -n serveops", "grep -c x <<<\"$out\"",
    "curl -s -o /dev/null -w '%{http_code}' u -d '{}'",
])
def test_the_denylist_lets_reads_through(snippet: str) -> None:
    code = literal_free(snippet)
    assert not (MUTATING.search(code) or REDIRECT.search(code)), snippet


def serveops_subcommands() -> set[str]:
    found = (re.findall(r"\bserveops\s+([a-z][\w-]*)", s.code) for b in books() for s in b.steps)
    return {sub for subs in found for sub in subs}


@pytest.mark.parametrize("sub", sorted(serveops_subcommands()))
def test_serveops_subcommand_exists(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([sub, "--help"])
    assert done.value.code == 0, f"serveops has no subcommand {sub!r}: {capsys.readouterr().err}"


def tuned_keys() -> list[tuple[str, str]]:
    keys = []
    for book in books():
        for step in book.steps:
            for line in re.findall(r"serveops tune [^\n]*", step.code):
                line = re.sub(r"\$\{[^}]*\}", "V", line)  # ${APP:?set APP=...} is no option
                keys += [(book.name, k) for k in re.findall(r"\s([A-Za-z_.]+)=", line)]
    return keys


@pytest.mark.parametrize(("book", "key"), tuned_keys())
def test_tuned_options_exist_in_ray(book: str, key: str) -> None:
    top, *rest = key.split(".")
    assert top in DeploymentSchema.model_fields, f"{book}: {key}"
    if top == "autoscaling_config":
        field = AutoscalingConfig.model_fields.get(rest[0])
        assert field is not None, f"{book}: {key} is no AutoscalingConfig field"
        assert "DEPRECATED" not in (field.description or ""), f"{book}: {key} is deprecated in Ray 2.60"


def test_chaos_steps_exist() -> None:
    for name, wanted in CHAOS_STEPS.items():
        have = {f"{s.kind}:{s.name}" for s in load(name).steps}
        missing = sorted(set(wanted) - have)
        assert not missing, f"{name} lacks {missing}"


def test_targeted_mitigations_ask_for_their_target() -> None:
    for book in books():
        for step in book.steps:
            if "serveops tune" in step.code:
                assert '"${APP:?' in step.code and '"${DEPLOYMENT:?' in step.code, f"{book.name}: {step.name}"


def test_kubernetes_steps_use_the_serveops_namespace() -> None:
    for book in books():
        for step in book.steps:
            for line in re.findall(r"\bkubectl [^\n]*", step.code):
                assert "-n serveops" in line, f"{book.name} {step.name}: {line}"
            if "kubectl" in step.code:
                assert step.kubernetes, f"{book.name}: {step.name} uses kubectl but is a {step.kind} step"


def test_readme_links_every_runbook() -> None:
    readme = (RUNBOOKS_DIR / "README.md").read_text()
    missing = [n for n in names() if f"]({n}.md)" not in readme]
    assert not missing, missing
    assert "make runbook NAME=" in readme and "CONFIRM=1" in readme


def test_links_between_runbooks_resolve() -> None:
    for path in [*RUNBOOKS_DIR.glob("*.md")]:
        for target in re.findall(r"\]\(([\w-]+\.md)\)", path.read_text()):
            assert (RUNBOOKS_DIR / target).exists(), f"{path.name} links {target}"


def test_kubernetes_steps_skip_without_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    step = Step("k8s-diagnose", "pods", "kubectl get pods -n serveops", "why")
    kubectl = execute.shutil.which("kubectl")
    try:
        execute.kubernetes_missing.cache_clear()
        monkeypatch.setattr(execute.shutil, "which", lambda _: None)
        assert "not installed" in execute.skip_reason(step, confirm=True)
        if kubectl:  # installed but pointed at no cluster: kubectl would talk to localhost:8080
            execute.kubernetes_missing.cache_clear()
            monkeypatch.setattr(execute.shutil, "which", lambda _: kubectl)
            monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
            assert "no cluster configured" in execute.skip_reason(step, confirm=True)
    finally:
        execute.kubernetes_missing.cache_clear()
