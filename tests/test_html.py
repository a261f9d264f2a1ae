"""The HTML report: the per-token view built from the trace (exact ids against ``t.trace``), a self-contained
page, ``--html`` on run and render, and the page in a real headless Chromium (no console error, no network
request, one element per token with the right experts, layers that switch colours, hover and keyboard)."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

import runprof
from runprof.cli import main
from runprof.errors import InvalidArgumentError
from runprof.models.loading import load_model
from runprof.renderers.html_tokens import HOW_TO_GET, repeat_rates
from runprof.results import TrackResult
from runprof.results.tokens import TokenView, token_pieces, token_view
from runprof.routing.stats import first_choice, routing_stats

from .conftest import REPO

PROMPT = REPO / "examples" / "prompt.txt"
NEW = 32  # the run command's default --max-new-tokens


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def default_run(shipped):
    """The shipped model's default run (examples/prompt.txt, 32 new tokens, greedy), with its per-token view."""
    tok = shipped.tokenizer
    enc = tok(PROMPT.read_text(encoding="utf-8"), return_tensors="pt")
    with torch.inference_mode(), runprof.track(shipped.model, name="tiny-moe", trace=True, weights=True) as t:
        out = shipped.model.generate(**enc, max_new_tokens=NEW, do_sample=False, pad_token_id=tok.pad_token_id)
    result = dataclasses.replace(t.result, tokens=token_view(t.trace, out, tok))
    return t.trace, out, enc["input_ids"].shape[1], result


@pytest.fixture(scope="module")
def page(default_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "run.html"
    path.write_text(runprof.render(default_run[3], format="html"), encoding="utf-8")
    return path


def test_token_view_matches_the_trace(default_run, shipped):
    trace, out, prompt_len, result = default_run
    view = result.tokens
    # 194 prompt tokens + 32 generated; the trace routed 194 + 31 (the last token is never fed back)
    assert (prompt_len, len(view.tokens), view.first_generated) == (194, 226, 194)
    assert view.token_ids == tuple(out[0].tolist())
    assert "".join(view.tokens) == shipped.tokenizer.decode(out[0], skip_special_tokens=False)
    assert [view.routed(i) for i in range(226)] == [True] * 225 + [False]
    for layer in range(4):
        assert list(view.first_choice(layer)) == first_choice(trace.layers[layer]).tolist() + [None]
        ids, weights = trace.layers[layer].ids, trace.layers[layer].weights
        for i in (0, 100, 224):
            assert sorted(view.experts[layer][i]) == sorted(ids[i].tolist())  # k = 2 experts, highest weight first
            assert list(view.weights[layer][i]) == sorted((round(float(w), 6) for w in weights[i]), reverse=True)
    assert view.experts[0][225] is None and view.weights[3][225] is None


def test_round_trips(default_run):
    result = default_run[3]
    d = json.loads(json.dumps(result.to_dict()))
    assert d["tokens"]["first_generated"] == 194 and len(d["tokens"]["experts"]) == 4
    assert TrackResult.from_dict(d) == result and TokenView.from_dict(d["tokens"]) == result.tokens
    plain = dataclasses.replace(result, tokens=None)
    assert plain.to_dict()["tokens"] is None and TrackResult.from_dict(plain.to_dict()) == plain


def test_left_padded_batch_and_early_end(shipped):
    tok = shipped.tokenizer
    enc = tok(["def f(x):\n    return x", "import os"], return_tensors="pt", padding=True)  # left-padded
    with torch.inference_mode(), runprof.track(shipped.model, trace=True, weights=True) as t:
        out = shipped.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    short = enc["attention_mask"][1].tolist()
    real = sum(short)
    assert short[0] == 0 and real < len(short)  # the second prompt really is padded
    view = token_view(t.trace, out, tok, row=1)
    assert view.token_ids == tuple(out[1, len(short) - real:].tolist())  # pads are not tokens
    assert (view.first_generated, len(view.tokens)) == (real, real + 4)
    # row 1's rows in the trace: its real prompt positions, then one row per decode step
    layer = t.trace.layers[2]
    seq = t.trace.steps[0].seq
    rows = [i for i in range(layer.ids.shape[0]) if int(layer.step[i]) == 0 and int(layer.position[i]) // seq == 1
            and bool(layer.real[i])] + [i for i in range(layer.ids.shape[0]) if int(layer.step[i]) > 0
                                        and int(layer.position[i]) == 1]
    assert list(view.first_choice(2)) == first_choice(layer)[rows].tolist() + [None]
    # a row that ended early: nothing after its end-of-sequence token is a token
    eos = int(out[0, seq + 1])
    end = next(i for i in range(seq, out.shape[1]) if int(out[0, i]) == eos)  # the first time row 0 generated it
    ended = token_view(t.trace, out, tok, row=0, eos_token_ids=[eos])
    assert len(ended.tokens) == end + 1 and ended.routed(end) and end < out.shape[1] - 1
    with pytest.raises(InvalidArgumentError, match="row=2: token_ids has 2 rows"):
        token_view(t.trace, out, tok, row=2)
    with pytest.raises(InvalidArgumentError, match="token_ids="):
        token_view(t.trace, torch.cat([out[0], out[0]]), tok)


def test_pieces_keep_whitespace_and_split_characters(shipped):
    tok = shipped.tokenizer
    text = "a\n\n  b\t'é'  \u4e2d\u6587 \U0001f600\n"
    ids = tok(text)["input_ids"]
    pieces = token_pieces(ids, tok)
    assert len(pieces) == len(ids) and "".join(pieces) == tok.decode(ids, skip_special_tokens=False)
    assert "\ufffd" not in "".join(pieces)


def test_repeat_rates_equal_the_routing_statistics(default_run):
    trace, _, _, result = default_run
    stats = routing_stats(trace).layers  # batch 1: the view's sequence is the whole run
    for mine, theirs in zip(repeat_rates(result.tokens), stats):
        assert mine.pairs == theirs.pairs == 224  # 225 routed tokens in a row
        assert mine.first_choice_repeat == pytest.approx(theirs.first_choice_repeat, abs=1e-12)
        assert mine.any_overlap_repeat == pytest.approx(theirs.any_overlap_repeat, abs=1e-12)
        assert mine.jaccard_repeat == pytest.approx(theirs.jaccard_repeat, abs=1e-12)
        assert (mine.first_choice_random, mine.any_overlap_random) == (1 / 8, pytest.approx(13 / 28))


def test_page_is_self_contained_and_has_every_token(page, default_run):
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 5_000_000
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?(?:#|data:))""", text, flags=re.I)  # no external resource
    assert "<link" not in text and "@import" not in text and "url(http" not in text
    spans = re.findall(r'<span class="tk[^"]*" data-i="(\d+)" data-x="(\w+)"', text)
    view = default_run[3].tokens
    assert [int(i) for i, _ in spans] == list(range(226))
    assert [x for _, x in spans] == [str(e) for e in view.first_choice(0)[:-1]] + ["n"]
    for heading in ("Summary", "Per-token experts", "Expert load per layer", "Distinct experts per decode step",
                    "Memory", "Consecutive-token expert repeats vs random routing"):
        assert f">{heading}</h2>" in text
    assert "every token used exactly the router&#x27;s k experts" in text  # reconcile cause sentences
    assert text.count("<svg") == 3 and runprof.render(default_run[3], format="html") == text  # deterministic


def test_without_matplotlib_or_tokens(default_run, monkeypatch):
    result = default_run[3]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = runprof.render(result, format="html")
    assert "<svg" not in text and text.count("pip install runprof[plot]") == 3
    assert text.count('class="tk') == 226  # every token
    bare = runprof.render(dataclasses.replace(result, tokens=None), format="html")
    assert 'class="tk' not in bare and bare.count("--html report.html") == 2 and "Expert load per layer" in bare
    assert HOW_TO_GET in bare.replace("&#x27;", "'")


def test_optional_flops_and_latency_sections(default_run):
    r = default_run[3]  # runtime.flops (results/flops.py) is shown as a key/value table until it has its own
    text = runprof.render(r, format="html")
    assert ">FLOPs</h2>" in text and "by_phase.decode" in text and f"{r.runtime.flops.total:,}" in text
    assert ">Latency</h2>" in text and "decode_step_s.median" in text
    bare = dataclasses.replace(r, runtime=dataclasses.replace(r.runtime, flops=None, latency=None))
    assert ">FLOPs</h2>" not in runprof.render(bare, format="html")


def test_html_of_other_results_is_refused():
    with pytest.raises(InvalidArgumentError, match="takes a run or bench result, not CountResult"):
        runprof.render(runprof.count_params("olmoe"), format="html")
    with pytest.raises(InvalidArgumentError, match="the formats are 'text' and 'html'"):
        runprof.render(runprof.count_params("olmoe"), format="pdf")


def test_cli_run_and_render_write_the_same_page(tmp_path, capsys):
    j, h, again = tmp_path / "run.json", tmp_path / "out" / "run.html", tmp_path / "again.html"
    assert main(["--prompt", str(PROMPT), "--max-new-tokens", "4", "--threads", "1", "--json", str(j),
                 "--html", str(h)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(j.read_text())["tokens"]["first_generated"] == 194
    assert main(["render", str(j), "--html", str(again)]) == 0
    assert capsys.readouterr().out == printed and again.read_bytes() == h.read_bytes()
    count = tmp_path / "count.json"
    assert main(["count", "olmoe", "--json", str(count)]) == 0
    capsys.readouterr()
    cases = [(["render", str(count), "--html", str(tmp_path / "c.html")], "takes a run or bench result"),
             (["--prompt", str(PROMPT), "--html", "-"], "--html -: an HTML report is a file"),
             (["--prompt", str(PROMPT), "--html", str(j), "--json", str(j)], "is also the --json file"),
             (["render", str(j), "--html", str(j)], "would overwrite the input")]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "c.html").exists()


# --- the page in a real browser (Debian's chromium + chromium-driver, driven by selenium) -------------------------

CHROME = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with console and network logs; explicit binaries, so selenium's manager never runs
    (it would reach for the network). Skips with the reason where the packages are missing."""
    if not (CHROME and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROME
    # --no-sandbox: required as root; host rules: nothing can reach a network even if the page tried
    # (the request would still be logged). No --user-data-dir: chromedriver's own profile opens no pages.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1000", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    except Exception as e:  # noqa: BLE001 - a broken install skips, with what went wrong
        pytest.skip(f"headless chromium does not start here: {str(e).splitlines()[0]}")
    yield driver
    driver.quit()


def _requests(driver, own: str) -> list[str]:
    messages = (json.loads(e["message"])["message"] for e in driver.get_log("performance"))
    urls = [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]
    # the page itself, and the figures' inline data: images (no request leaves the page for them)
    return [u for u in urls if u != own and not u.startswith("data:")]


def test_the_page_in_a_headless_browser(browser, page, default_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    trace, view = default_run[0], default_run[3].tokens
    browser.get_log("browser"), browser.get_log("performance")  # drain what earlier pages left
    browser.get(page.as_uri())
    tokens = browser.find_elements(By.CSS_SELECTOR, "#tokens .tk")
    assert len(tokens) == len(view.tokens) == 226  # one element per prompt and generated token

    def experts() -> list[str]:
        return browser.execute_script("return [...document.querySelectorAll('#tokens .tk')].map(t => t.dataset.x)")

    def colours() -> list[str]:
        return browser.execute_script(
            "return [...document.querySelectorAll('#tokens .tk')].map(t => getComputedStyle(t).backgroundColor)")

    expected = {layer: [str(e) for e in first_choice(trace.layers[layer]).tolist()] + ["n"] for layer in (0, 3)}
    assert experts() == expected[0]
    assert browser.execute_script("return [...document.querySelectorAll('#tokens .tk')].map(t => t.textContent)") \
        == list(view.tokens)  # whitespace and newlines kept
    before = colours()
    assert len(set(before)) == 9  # 8 experts and the hatched not-routed token
    Select(browser.find_element(By.ID, "layer")).select_by_value("3")  # a real 'change' event
    assert experts() == expected[3]
    after = colours()
    assert after != before and sum(a != b for a, b in zip(before, after)) > 100
    assert browser.find_element(By.ID, "tokens").screenshot(str(tmp_path / "tokens_layer3.png"))

    # hovering shows every layer's experts and weights; the selected layer's row is marked
    ActionChains(browser).move_to_element(tokens[10]).perform()
    rows = browser.find_elements(By.CSS_SELECTOR, "#detail tr")
    assert len(rows) == 1 + 4 and "cur" in rows[4].get_attribute("class")
    e0, w0 = view.experts[0][10], view.weights[0][10]
    assert rows[1].text.split() == ["model.layers.0.mlp", str(e0[0]), f"{w0[0]:.3f}", str(e0[1]), f"{w0[1]:.3f}"]
    # keyboard: Tab reaches the tokens (one tab stop), arrows move between them and switch layers
    browser.execute_script("document.getElementById('next-layer').focus()")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.execute_script("return document.activeElement.dataset.i") == "0"
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT).perform()
    assert browser.execute_script("return document.activeElement.dataset.i") == "2"
    assert "token 2 (prompt" in browser.find_element(By.ID, "detail").text
    ActionChains(browser).send_keys(Keys.ARROW_DOWN).perform()  # layer 3 -> layer 0 (wraps round)
    assert browser.find_element(By.ID, "layer").get_attribute("value") == "0" and experts() == expected[0]
    ActionChains(browser).send_keys(Keys.END).perform()
    assert "not routed" in browser.find_element(By.ID, "detail").text  # the last generated token
    shot = tmp_path / "run.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [] and _requests(browser, page.as_uri()) == []


def test_ids_are_unique(page):
    ids = re.findall(r'\bid="([^"]+)"', re.sub(r"<svg.*?</svg>", "", page.read_text(encoding="utf-8"), flags=re.S))
    assert len(ids) == len(set(ids)) and {"per-token", "tokens", "layer", "detail", "tv-data"} <= set(ids)


class _Ids:
    """A tokenizer for models without one: token i reads "<i> "."""

    eos_token_id = None

    def decode(self, ids, **kwargs):
        return "".join(f"{i} " for i in ids)


def test_128_experts_page():
    from .moe_zoo import tiny_model

    model = tiny_model("qwen3_moe", num_experts=128, num_experts_per_tok=8)
    ids = torch.arange(3, 20).reshape(1, -1)
    with torch.inference_mode(), runprof.track(model, name="/ckpt/qwen3-128e", trace=True, weights=True) as t:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    view = token_view(t.trace, out, _Ids())
    assert (len(view.tokens), view.num_experts, len(view.experts)) == (22, 128, 2)  # 17 + 5; 2 MoE layers
    assert all(len(e) == 8 for e in view.experts[1][:-1])
    text = runprof.render(dataclasses.replace(t.result, tokens=view), format="html")
    assert text.count('[data-x="') == 128 + 1  # a colour per expert, and the not-routed hatch
    assert text.count('class="sw" data-x=') == 128 + 1 and "<title>runprof run: qwen3-128e</title>" in text
