"""Property tests for the Plan's JSON: the round trip holds, and bad JSON is only ever a PlanError."""

import dataclasses
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from modelsurgery.errors import PlanError
from modelsurgery.plan import PLAN_VERSION, ConvSite, FCSite, ModelSource, Plan, Resample

SETTINGS = settings(max_examples=150, deadline=None)

names = st.text(max_size=24)  # qualnames are arbitrary strings to JSON
positive = st.integers(1, 4096)
pair = st.tuples(positive, positive)
padding = st.one_of(st.tuples(*[st.integers(0, 16)] * 4), st.sampled_from(["same", "valid", "dynamic"]))
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
# Plans hold tuples only (zoo/_tuplify turn lists and dicts into tuples before a Plan is built).
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=10)


def tuples_of(strategy, max_size=4):
    return st.lists(strategy, max_size=max_size).map(tuple)


conv_sites = st.builds(
    ConvSite, name=names, kernel=pair, small_kernel=pair, stride=pair, dilation=pair, groups=positive,
    in_channels=positive, out_channels=positive, padding=padding, small_padding=padding, in_hw=pair,
    out_hw=pair, small_in_hw=pair, small_out_hw=pair,
    reason=st.sampled_from(["table", "rule", "patchify", "dilated", "1x1", "user", "stride"]))
fc_sites = st.builds(FCSite, name=names, kind=st.sampled_from(["linear", "conv"]), channels=positive, hw=pair,
                     small_hw=pair, pool=st.none() | names, owner=st.none() | names, out_features=st.integers(0, 10**6))
resamples = st.builds(Resample, node=names, arg=st.integers(0, 4), ref=st.integers(0, 4), from_hw=pair, to_hw=pair)
sources = st.builds(ModelSource, kind=st.sampled_from(["timm", "torchvision", "custom"]), name=names,
                    kwargs=tuples_of(st.tuples(names, json_value)))
plans = st.builds(
    Plan, source=sources, input_size=positive, target_size=positive, in_chans=positive,
    convs=tuples_of(conv_sites), fcs=tuples_of(fc_sites, 3), resamples=tuples_of(resamples, 3),
    kernel_map=tuples_of(pair, 6), even_padding=st.sampled_from(["alternate", "bottom-right"]),
    form=st.sampled_from(["pretrain", "target"]), versions=tuples_of(st.tuples(names, names), 3),
    version=st.integers(1, PLAN_VERSION))


@SETTINGS
@given(plans)
def test_json_round_trip(plan):
    text = plan.to_json()
    back = Plan.from_json(text)
    assert back == plan
    assert back.to_json() == text  # and the text is canonical (sorted keys)
    assert Plan.from_json(plan.to_json(indent=2)) == plan
    assert Plan.from_dict(json.loads(text)) == plan


@SETTINGS
@given(plans, st.sampled_from(["input_size", "target_size", "in_chans"]))
def test_round_trip_keeps_plans_apart(plan, field):
    changed = plan.replace(**{field: getattr(plan, field) + 1})
    assert Plan.from_json(changed.to_json()) != plan


# --- malformed input -------------------------------------------------------------------------

def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


@SETTINGS
@given(st.text(max_size=60).filter(_not_json))
def test_text_that_is_not_json(text):
    with pytest.raises(PlanError, match=r"plan is not valid JSON \(.* at char \d+\)\. Hint: re-create it"):
        Plan.from_json(text)


@SETTINGS
@given(plans, st.data())
def test_truncated_plan_json(plan, data):
    text = plan.to_json()
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(PlanError, match="not valid JSON|must be a JSON object"):
        Plan.from_json(text[:cut])


@SETTINGS
@given(st.one_of(json_scalar, st.lists(json_scalar, max_size=3)))
def test_json_that_is_not_an_object(value):
    with pytest.raises(PlanError, match=r"plan must be a JSON object, got "):
        Plan.from_json(json.dumps(value))


@SETTINGS
@given(plans, st.integers(PLAN_VERSION + 1, 10**9))
def test_newer_version(plan, version):
    data = {**plan.to_dict(), "version": version}
    with pytest.raises(PlanError, match=rf"plan version {version} is newer than this modelsurgery supports "
                                        rf"\({PLAN_VERSION}\)\. Hint: upgrade"):
        Plan.from_json(json.dumps(data))


@SETTINGS
@given(plans, st.one_of(st.none(), st.text(max_size=5), st.floats(allow_nan=False),
                        st.lists(st.integers(), max_size=2)),
       st.booleans())
def test_missing_or_non_integer_version(plan, bad, drop):
    data = plan.to_dict()
    if drop:
        del data["version"]
    else:
        data["version"] = bad
    with pytest.raises(PlanError, match=r"plan has no integer 'version'\. Hint: re-create it"):
        Plan.from_json(json.dumps(data))


def _required(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


@SETTINGS
@given(plans, st.data())
def test_missing_required_field(plan, data):
    record = data.draw(st.sampled_from(["plan", "source", "convs", "fcs", "resamples"]))
    doc = plan.to_dict()
    if record == "plan":
        target, fields = doc, [f for f in _required(Plan) if f != "version"]
    elif record == "source":
        target, fields = doc["source"], _required(ModelSource)
    else:
        assume(doc[record])
        cls = {"convs": ConvSite, "fcs": FCSite, "resamples": Resample}[record]
        target, fields = data.draw(st.sampled_from(doc[record])), _required(cls)
    del target[data.draw(st.sampled_from(fields))]
    with pytest.raises(PlanError, match=r"malformed plan JSON \(.+\)\. Hint: re-create it"):
        Plan.from_json(json.dumps(doc))


@SETTINGS
@given(plans, st.sampled_from(["plan", "source", "convs", "fcs", "resamples"]), st.text(min_size=1, max_size=8))
def test_unknown_field(plan, record, key):
    doc = plan.to_dict()
    target = doc if record == "plan" else doc["source"] if record == "source" else (doc[record] or [None])[0]
    assume(target is not None and key not in target)
    target[key] = 1
    with pytest.raises(PlanError, match=r"malformed plan JSON \(.*(unknown \w+ fields|unexpected keyword)"):
        Plan.from_json(json.dumps(doc))


@SETTINGS
@given(plans, st.sampled_from(["source", "convs", "fcs", "resamples"]),
       st.one_of(json_scalar, st.lists(json_scalar, min_size=1, max_size=2)))
def test_wrong_shaped_records(plan, record, value):
    doc = plan.to_dict()
    if record != "source" and isinstance(value, list):
        value = [value]  # a list of records whose records are lists
    assume(value not in ([], None, "") or record == "source")  # empty iterables are empty record lists
    doc[record] = value
    with pytest.raises(PlanError, match="malformed plan JSON"):
        Plan.from_json(json.dumps(doc))


json_any = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["source", "input_size", "target_size", "convs", "fcs", "resamples",
                                        "kernel_map", "form", "other"]), json_any, max_size=6))
def test_any_json_object_gives_a_plan_or_a_plan_error(doc):
    doc["version"] = PLAN_VERSION
    try:
        Plan.from_json(json.dumps(doc))
    except PlanError:
        pass
