"""HTML reports of the shipped tiny MoE, and the README's two images.

    python examples/html_report.py                      # reports/run.html and reports/bench.html
    python examples/html_report.py --images docs/images  # also token_view.png and bench_repeat_rates.png

The run is the CLI's default (examples/prompt.txt, 32 new tokens, greedy); the bench compares k = 1, 2, 4.
The screenshot of the per-token view needs Debian's chromium and chromium-driver and selenium
(``pip install selenium``); the figures need matplotlib.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import runprof
from runprof.models.loading import load_model
from runprof.renderers.plots import bench_figures, save_figure
from runprof.results.tokens import token_view
from runprof.routing.bench import bench

REPO = Path(__file__).resolve().parents[1]
PROMPT = REPO / "examples" / "prompt.txt"


def screenshot(page: Path, target: Path, layer: int = 3) -> None:
    """The per-token section of ``page`` (layer ``layer`` selected, token 40 hovered) as a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(page.as_uri())
        driver.set_window_size(1200, driver.execute_script("return document.body.scrollHeight") + 200)
        Select(driver.find_element(By.ID, "layer")).select_by_value(str(layer))
        ActionChains(driver).move_to_element(driver.find_elements(By.CSS_SELECTOR, "#tokens .tk")[40]).perform()
        driver.find_element(By.ID, "tokens").find_element(By.XPATH, "ancestor::section").screenshot(str(target))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports", help="folder for run.html and bench.html")
    parser.add_argument("--images", default=None, help="also write the README's images into this folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, loaded = Path(args.out), load_model()
    out.mkdir(parents=True, exist_ok=True)
    tok = loaded.tokenizer
    enc = tok(PROMPT.read_text(encoding="utf-8"), return_tensors="pt")
    with torch.inference_mode(), runprof.track(loaded.model, name="tiny-moe", trace=True, weights=True) as t:
        ids = loaded.model.generate(**enc, max_new_tokens=32, do_sample=False, pad_token_id=tok.pad_token_id)
    run = dataclasses.replace(t.result, tokens=token_view(t.trace, ids, tok))
    (out / "run.html").write_text(runprof.render(run, format="html"), encoding="utf-8")
    result = bench(loaded.model, enc["input_ids"], top_ks=[1, 2, 4], repeats=3, max_new_tokens=16,
                   pad_token_id=tok.pad_token_id, name="tiny-moe")
    (out / "bench.html").write_text(runprof.render(result, format="html"), encoding="utf-8")
    print(f"wrote {out / 'run.html'} and {out / 'bench.html'}")
    if args.images:
        images = Path(args.images)
        save_figure(bench_figures(result)["repeat_rates"], images / "bench_repeat_rates.png")
        screenshot(out / "run.html", images / "token_view.png")
        print(f"wrote {images / 'bench_repeat_rates.png'} and {images / 'token_view.png'}")


if __name__ == "__main__":
    main()
