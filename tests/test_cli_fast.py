"""`VERB --help` and `list` answer without importing torch (from invscore.cli.facts' snapshot), and what they
print is exactly what the live registries give.

Each fast command runs in a fresh interpreter that reports whether torch ended up in sys.modules; this test
process imports torch, so the same commands run here read the registries directly (invscore.cli.facts.fact).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # noqa: F401  (loaded: in this process the CLI reads the live registries, the reference)

from invscore.cli import facts, main
from invscore.cli.args import TASKS

ROOT = Path(__file__).resolve().parents[1]
# run main(argv) and report, after its output, whether torch was imported and the exit code
_CODE = ("import sys\nfrom invscore.cli import main\ntry:\n    code = main(%r)\nexcept SystemExit as exc:\n"
         "    code = exc.code\nprint('\\n@torch', 'torch' in sys.modules, code)")
FAST = ([[verb, "--help"] for verb in TASKS] + [["train", "--help"], ["list"], ["list", "priors"],
                                               ["list", "methods"], ["list", "operators"], ["list", "samplers"]])


def _run(argv, env) -> tuple[str, bool, str]:
    """(printed text, whether torch was imported, exit code) of ``main(argv)`` in a fresh interpreter."""
    res = subprocess.run([sys.executable, "-c", _CODE % (argv,)], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    text, _, tail = res.stdout.rpartition("\n@torch ")
    loaded, code = tail.split()
    return text, loaded == "True", code


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An environment whose cache holds a stale snapshot; the first command must replace it."""
    cache = tmp_path_factory.mktemp("cache")
    stale = {name: ["bogus_row"] for name in facts.FACTS}
    (cache / "cli_facts.json").write_text(json.dumps({"key": "stale", "facts": stale}))
    env = {**os.environ, "INVSCORE_CACHE": str(cache), "COLUMNS": "100", "OMP_NUM_THREADS": "1"}
    text, loaded, code = _run(["list", "methods"], env)
    assert code == "0" and "bogus" not in text and "pigdm" in text
    assert loaded  # a snapshot that does not match the sources is recomputed from the registries (torch)
    saved = json.loads((cache / "cli_facts.json").read_text())
    assert saved["key"] == facts.source_key() and "bogus_row" not in json.dumps(saved)
    return env


def _live(argv, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal width
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", FAST, ids=" ".join)
def test_fast_commands_skip_torch_and_match_the_registries(argv, env, capsys, monkeypatch):
    text, loaded, code = _run(argv, env)
    assert not loaded, f"{' '.join(argv)} imported torch"
    assert code in ("0", "None")
    assert text == _live(argv, capsys, monkeypatch)


def test_snapshot_is_the_registries(env):
    saved = json.loads((Path(env["INVSCORE_CACHE"]) / "cli_facts.json").read_text())["facts"]
    saved.pop("train_help", None)
    assert saved == facts.collect()


def test_help_and_list_show_the_method_registry(env):
    from invscore.conditional import METHODS
    saved = json.loads((Path(env["INVSCORE_CACHE"]) / "cli_facts.json").read_text())["facts"]
    assert saved["method_names"] == list(METHODS)
    rows = "\n".join(saved["list_methods"])
    for name, cls in METHODS.items():
        m = cls()
        assert f"{m.description}" in rows and f"  {name:<11} {m.steps:>5} {m.grid:<8} {m.needs:<8}" in rows
        if m.defaults:
            assert "options: " + ", ".join(f"{k}={v}" for k, v in m.defaults.items()) in rows
    help_text, loaded, _ = _run(["inpaint", "--help"], env)
    assert not loaded and ", ".join(METHODS) in " ".join(help_text.split())


def test_list_priors_shows_cards_and_formats(env):
    from invscore.checkpoint import read_card, shipped
    from invscore.priors.formats import available_formats
    text, loaded, _ = _run(["list", "priors"], env)
    assert not loaded
    for name in shipped():
        card = read_card(name)
        assert f"  {name:<24} {card['kind']:<11} {card['channels']}×{card['image_size']}" in text
        family = card.get("family", "score" if card["kind"] == "denoiser" else "-")
        size = f"{card['channels']}×{card['image_size']}×{card['image_size']}"
        line = text.split(f"  {name:<24}")[1].splitlines()[0]
        assert f"{size:<10} {family:<11} " in line
        if card.get("family") == "latent":
            assert f"with {card['autoencoder']}" in line
        if card.get("classes"):
            assert f"{card['classes']} classes" in line
    for spec, desc in available_formats().values():
        assert f"--prior {spec:<22} {desc}" in text


def test_top_level_help_reads_no_snapshot(tmp_path):
    env = {**os.environ, "INVSCORE_CACHE": str(tmp_path / "c")}
    text, loaded, _ = _run(["--help"], env)
    assert not loaded and "inpaint" in text and not (tmp_path / "c").exists()


def test_source_key_follows_sources_assets_and_config(tmp_path):
    pkg, assets, config = tmp_path / "pkg", tmp_path / "assets", tmp_path / "config.yaml"
    (pkg / "sub").mkdir(parents=True)
    (assets / "test_images").mkdir(parents=True)
    (pkg / "sub" / "m.py").write_text("X = 1\n")
    (assets / "a.json").write_text('{"steps": 1}')
    config.write_text("sigma_y: 0.05\n")

    def key():
        return facts.source_key([pkg], assets, config)

    seen = [key()]
    for edit in (lambda: (pkg / "sub" / "m.py").write_text("X = 2\n"), lambda: (pkg / "n.py").write_text(""),
                 lambda: (assets / "a.json").write_text('{"steps": 2}'), lambda: (assets / "b.safetensors").touch(),
                 lambda: (assets / "test_images" / "emoji").mkdir(), lambda: config.write_text("sigma_y: 0.1\n")):
        edit()
        seen.append(key())
    assert len(set(seen)) == len(seen)
    (pkg / "notes.txt").write_text("not code")
    assert key() == seen[-1]


def test_cache_that_cannot_be_written_or_read(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("INVSCORE_CACHE", str(blocker))  # a file where the cache folder should be
    facts._write("k", {name: [] for name in facts.FACTS})  # no error: the next call recomputes instead
    assert facts._read("k") is None
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path / "ok"))
    partial = {name: [] for name in facts.FACTS if name != "sigma_y"}
    facts._write("k", partial)
    assert facts._read("k") is None  # a snapshot missing a fact is not used
    facts._write("k", {**partial, "sigma_y": "0.05"})
    assert facts._read("k")["sigma_y"] == "0.05" and facts._read("other") is None
    assert [p.name for p in (tmp_path / "ok").iterdir()] == ["cli_facts.json"]
    with pytest.raises(ValueError, match="unknown CLI fact"):
        facts.fact("nope")


def test_a_broken_registry_only_breaks_its_own_fact(tmp_path, monkeypatch):
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path))
    monkeypatch.setitem(facts.FACTS, "broken", ("invscore.cli.facts", "_no_such_collector"))
    assert facts._refresh("k") == {} and not (tmp_path / "cli_facts.json").exists()  # no partial snapshot
    assert facts.fact("method_names")  # the others still answer (here live: this process has torch)
    with pytest.raises(AttributeError, match="_no_such_collector"):
        facts.fact("broken")
