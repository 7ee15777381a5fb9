"""The architecture diagram states the stack's settings as they are set.

image/make_structure.py draws its labels from fluent.conf and init/ and stores them in the
PNG; a setting that changed without the picture being drawn again fails here.
"""

from __future__ import annotations

import importlib.util
import re

from support.compose import ROOT
from support.fluentd_conf import FLUENT_CONF


def make_structure():
    spec = importlib.util.spec_from_file_location("make_structure", ROOT / "image" / "make_structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_picture_was_drawn_from_the_current_settings():
    module = make_structure()
    drawn = module.drawn_labels((ROOT / "image" / "structure.png").read_bytes())
    assert drawn is not None, "image/structure.png was not drawn by image/make_structure.py"
    assert drawn == module.labels(), "a setting changed: run python3 image/make_structure.py"


def test_the_labels_say_what_fluent_conf_and_the_mapping_set():
    import init_resource

    labels = make_structure().labels()
    conf = FLUENT_CONF.read_text()
    output = re.search(r"<match nginx\.access>.*?^\s*@type\s+(\S+)", conf, re.S | re.M).group(1)
    interval = re.search(r"^\s*flush_interval\s+(\S+)", conf, re.M).group(1)
    assert output in labels["fluentd"] and f"every {interval} s" in labels["put"]
    assert f"{init_resource.MAPPING['BatchSize']:,}" in labels["mapping"]
    # the mapping's window is 0: a batch goes out at the poll that finds it
    assert init_resource.MAPPING["MaximumBatchingWindowInSeconds"] == 0 and "at each poll" in labels["mapping"]


def test_a_stale_picture_is_caught():
    module = make_structure()
    png = (ROOT / "image" / "structure.png").read_bytes()
    stale = {**module.labels(), "put": 'PutRecords {"message": line}'}
    assert module.drawn_labels(module.with_labels(png, stale)) != module.labels()


def test_the_landing_page_describes_the_output_fluent_conf_sets():
    page = (ROOT / "nginx" / "html" / "index.html").read_text()
    output = re.search(r"<match nginx\.access>.*?^\s*@type\s+(\S+)", FLUENT_CONF.read_text(), re.S | re.M).group(1)
    # one record per flush (aggregated) is what the page tells a visitor; per line it is not
    assert ("aggregated" in page) == (output == "kinesis_streams_aggregated")
