"""The JSON Schema of the exact Grafana version deploy/compose.yaml pins, made from that version's
npm package ``@grafana/schema`` (its TypeScript types) with ``ts-json-schema-generator``, and a
validator (``ajv``) that checks the dashboards against it.

Everything is installed by :func:`grafana_schemas` itself, with npm, into
``.cache/grafana-schema/<version>/`` (git-ignored), once per version. Without node/npm or the
registry the tests skip on a laptop and fail under CI (``CI=true``).

What is checked (``validate.mjs``): each dashboard against ``Dashboard`` of
``raw/dashboard/x/dashboard_types.gen.d.ts``; each panel's ``options`` against ``Options`` and its
``fieldConfig.defaults.custom`` against ``FieldConfig`` of the panel type's
``raw/composable/<type>/panelcfg/x/*PanelCfg_types.gen.d.ts``. The generator forbids properties
a type does not declare (``additionalProperties: false``), so a misspelt option is an error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.grafana_files import DEPLOY, load_yaml
from tests.servers import in_ci

ROOT = DEPLOY.parent
GENERATOR = "ts-json-schema-generator@2.4.0"
TOOLS = [GENERATOR, "typescript@5.6.3", "ajv@8.17.1"]
#: Grafana panel type -> the folder and file prefix of its panelcfg types
PANEL_TYPES = {"timeseries": ("timeseries", "TimeSeries"), "table": ("table", "Table"),
               "stat": ("stat", "Stat"), "state-timeline": ("statetimeline", "StateTimeline")}

VALIDATE_JS = r"""
import fs from "node:fs";
import path from "node:path";
import Ajv from "ajv";

const [schemaDir, ...boards] = process.argv.slice(2);
const ajv = new Ajv({ allErrors: true, strict: false });
const compiled = {};
for (const f of fs.readdirSync(schemaDir).filter(n => n.endsWith(".json"))) {
  const schema = JSON.parse(fs.readFileSync(path.join(schemaDir, f)));
  if (f === "Dashboard.json") {
    // The raw AnnotationTarget describes Grafana's built-in annotations only (its source says
    // "TODO: this should just be DataQuery"); Grafana's own veneer types an annotation's target
    // as a DataQuery: refId plus the datasource's fields. Checked as that.
    schema.definitions.AnnotationTarget = {
      type: "object", required: ["refId"], additionalProperties: true,
      properties: { refId: { type: "string" }, hide: { type: "boolean" },
                    queryType: { type: "string" },
                    datasource: { $ref: "#/definitions/DataSourceRef" } } };
  }
  compiled[f.replace(/\.json$/, "")] = ajv.compile(schema);
}
const errors = [];
function check(name, data, where) {
  const validate = compiled[name];
  if (!validate) { errors.push(`${where}: no schema ${name}`); return; }
  if (!validate(data)) {
    for (const e of validate.errors) {
      errors.push(`${where}${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`);
    }
  }
}
for (const file of boards) {
  const board = JSON.parse(fs.readFileSync(file));
  const where = path.basename(file);
  check("Dashboard", board, where);
  const panels = (board.panels || []).flatMap(p => [p, ...(p.panels || [])]);
  for (const p of panels) {
    if (p.type === "row") continue;
    const at = `${where} panel "${p.title}"`;
    if (p.options !== undefined) check(`${p.type}.Options`, p.options, `${at} options`);
    const custom = p.fieldConfig && p.fieldConfig.defaults && p.fieldConfig.defaults.custom;
    if (custom !== undefined) {
      check(`${p.type}.FieldConfig`, custom, `${at} fieldConfig.defaults.custom`);
    }
  }
}
console.log(JSON.stringify(errors));
"""


def pinned_grafana_version() -> str:
    image: str = load_yaml(DEPLOY / "compose.yaml")["services"]["grafana"]["image"]
    return image.rpartition(":")[2]


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and the Grafana schema cannot be made: {reason}", pytrace=False)
    pytest.skip(reason)


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def grafana_schemas(version: str | None = None) -> Path:
    """The directory of the generated schemas (and validate.mjs) for ``version``."""
    version = version or pinned_grafana_version()
    cache = ROOT / ".cache" / "grafana-schema" / version
    schemas = cache / "schemas"
    done = schemas / "complete"
    if done.exists():
        return cache
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        _unavailable("node and npm are needed (Debian: apt-get install nodejs npm)")
    cache.mkdir(parents=True, exist_ok=True)
    (cache.parent / ".gitignore").write_text("*\n")  # never committed, whatever the root says
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text(json.dumps(
            {"name": "thermopipe-grafana-schema", "private": True, "type": "module"}))
    result = _run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts",
                   "--prefix", str(cache), f"@grafana/schema@{version}", *TOOLS], cache, 600)
    if result.returncode != 0:
        _unavailable(f"npm install failed: {result.stderr[-1500:]}")
    raw = cache / "node_modules" / "@grafana" / "schema" / "dist" / "esm" / "raw"
    wanted: dict[str, tuple[Path, str]] = {
        "Dashboard": (raw / "dashboard" / "x" / "dashboard_types.gen.d.ts", "Dashboard")}
    for panel_type, (folder, prefix) in PANEL_TYPES.items():
        types = raw / "composable" / folder / "panelcfg" / "x" / f"{prefix}PanelCfg_types.gen.d.ts"
        text = types.read_text()
        for name in ("Options", "FieldConfig"):
            if f"export interface {name} " in text:
                wanted[f"{panel_type}.{name}"] = (types, name)
    schemas.mkdir(exist_ok=True)
    generator = cache / "node_modules" / ".bin" / "ts-json-schema-generator"
    for name, (path, type_name) in wanted.items():
        result = _run([str(generator), "--path", str(path), "--type", type_name,
                       "--no-type-check", "--out", str(schemas / f"{name}.json")], cache, 300)
        if result.returncode != 0:
            pytest.fail(f"ts-json-schema-generator could not make {name}: {result.stderr[-2000:]}")
    (cache / "validate.mjs").write_text(VALIDATE_JS)
    done.write_text(json.dumps(sorted(wanted)))
    return cache


def validate(cache: Path, dashboards: list[Path]) -> list[str]:
    """Every schema error of ``dashboards`` (paths), as ``file panel path message`` lines."""
    node = shutil.which("node")
    assert node
    result = _run([node, str(cache / "validate.mjs"), str(cache / "schemas"),
                   *map(str, dashboards)], cache, 120)
    assert result.returncode == 0, result.stderr
    errors: list[str] = json.loads(result.stdout)
    return errors


def schema_names(cache: Path) -> list[str]:
    names: list[Any] = json.loads((cache / "schemas" / "complete").read_text())
    return [str(n) for n in names]
