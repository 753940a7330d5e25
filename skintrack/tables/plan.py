"""The study plan: what the trial says it will analyse, stored with the study as ``STUDY/plan.toml``.

The baseline visit; the visit schedule (labels in order, nominal day, allowed window) and how its windows
are applied (``windows``: ``exclude`` a capture outside its visit's window, map each capture to the
``nearest`` window's visit, or take the ``nominal`` labels as they are); the control arm and the treatment
arms; the primary endpoint and the key secondary endpoints in their testing order; the multiplicity
strategy across endpoints (``fixed_sequence``: each endpoint a family, tested in order while every
comparison before it was rejected; or ``holm``) and across treatment arms (``arm_comparisons``:
``dunnett``, ``holm``, ``dose_order`` in the order the treatments are listed, or ``none``); how QC-flagged
captures are handled (``exclude``: left out of the primary analysis and included as a sensitivity
analysis, or ``include``: the reverse); the MMRM's covariance structure, degrees of freedom
(``kenward-roger`` by default, or ``satterthwaite``) and variance (``auto``: model-based for the
unstructured covariance, empirical for any other); the estimand (ICH E9(R1): population, variable,
intercurrent events and their strategies, population-level summary); the missing-data sensitivity
analyses; the API generation the analyses are restricted to (``generation``, e.g. ``"v1.7.6"``: values
another generation measured are left out, with the reason); responder thresholds per metric; the subjects
whose photographs the report shows (``illustration``: named ids, or ``per_arm`` drawn at random with a
``seed``, never chosen by their response); what the subjects CSV's own columns mean in the ADaM
(``subject_columns``: the variable name and label of each). Every helper, the report and the export read it. A study
without a plan (or a plan that leaves something out) gets defaults derived from the data, and
`Plan.assumed` names each of them so that every output can say what was assumed.

Example
-------
>>> import tempfile, pathlib
>>> p = Plan(baseline="D0", visits=[Visit("D0", 0, 0), Visit("W12", 84, 7)], control="placebo",
...          treatments=["active"], primary=Endpoint("score.water", "W12"))
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> p.write(folder).name
'plan.toml'
>>> Plan.read(folder).primary
Endpoint(metric='score.water', visit='W12')
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError, is_number, whole
from .catalog import metric_info
from .generations import NAMES as GENERATION_NAMES
from .layout import PLAN as FILE  # noqa: F401 (plan.FILE, read by other modules)

MULTIPLICITY = ("fixed_sequence", "holm")
ARM_COMPARISONS = ("dunnett", "holm", "dose_order", "none")
QC_HANDLING = ("exclude", "include")
MODELS = ("mmrm", "negative_binomial", "proportional_odds", "logistic")
WINDOWS = ("exclude", "nearest", "nominal")
DF = ("kenward-roger", "satterthwaite")
COVARIANCES = ("unstructured", "toeplitz_h", "ar1_h", "cs_h", "spatial_power", "toeplitz", "ar1", "cs")
VARIANCES = ("auto", "model", "empirical")
# Intercurrent events the store can see, where it sees them, and the strategies skintrack can apply to them.
EVENTS = {"discontinuation": "the subjects CSV's `discontinued_after` (the last visit on treatment)",
          "rescue": "the manifest's `rescue` (yes/1/true from the first capture after rescue product use)"}
STRATEGIES = ("treatment_policy", "hypothetical")
DEFAULT_STRATEGY = {"discontinuation": "treatment_policy", "rescue": "hypothetical"}
SENSITIVITY = ("qc", "mi", "j2r", "cr", "tipping", "generation", "bridge")
MIN_IMPUTATIONS = 2  # Rubin's rules pool the spread between the imputations: one alone has none, and hides it
CONTROL_NAMES = re.compile(r"placebo|control|vehicle|sham|untreated", re.I)


@dataclass(frozen=True)
class Visit:
    """One scheduled visit: its label, nominal day (since baseline) and allowed window (+/- days)."""

    label: str
    day: float | None = None
    window: float | None = None


@dataclass(frozen=True)
class Endpoint:
    """A metric at a visit."""

    metric: str
    visit: str


TEXT, NUMBER = (str,), (int, float)
# What each key of plan.toml holds: (the TOML types it may be, what a reader is told, an example).
KEY_TYPES = {
    "title": (TEXT, "a text", '"Hydration trial"'), "sponsor": (TEXT, "a text", '"Acme"'),
    "product": (TEXT, "a text", '"Serum X"'), "protocol": (TEXT, "a text", '"AC-2024-01"'),
    "version": (TEXT, "a text", '"1.0"'), "baseline": (TEXT, "a visit label", '"D0"'),
    "visits": ((list,), "a list of tables", '[{label = "D0", day = 0, window = 0}, {label = "W4", day = 28, window = 3}]'),
    "control": (TEXT, "an arm name", '"placebo"'), "treatments": ((list,), "a list of arm names", '["active"]'),
    "primary": ((dict,), "a table", '{metric = "score.water", visit = "W12"}'),
    "secondary": ((list,), "a list of tables", '[{metric = "score.rough", visit = "W12"}]'),
    "multiplicity": (TEXT, "a text", '"fixed_sequence"'), "alpha": (NUMBER, "a number", "0.05"),
    "qc": (TEXT, "a text", '"exclude"'), "responders": ((dict,), "a table of thresholds", '{"score.water" = 5}'),
    "models": ((dict,), "a table of models", '{"count.acne.front" = "negative_binomial"}'),
    "arm_comparisons": (TEXT, "a text", '"dunnett"'), "windows": (TEXT, "a text", '"exclude"'),
    "df": (TEXT, "a text", '"kenward-roger"'), "covariance": (TEXT, "a text", '"unstructured"'),
    "variance": (TEXT, "a text", '"auto"'),
    "estimand": ((dict,), "a table", '{population = "...", strategies = {rescue = "hypothetical"}}'),
    "sensitivity": ((dict,), "a table", '{imputations = 200, seed = 1}'),
    "generation": (TEXT, "an API generation", '"v1.7.6"'),
    "illustration": ((dict,), "a table", '{per_arm = 2, seed = 7} or {subjects = ["S01", "S14"]}'),
    "subject_columns": ((dict,), "a table of tables", '{skin_type_self = {name = "SKINTYPE", label = "Self-assessed '
                                                      'skin type"}}'),
}
ITEM_TYPES = {"visits": (dict, {"label": TEXT, "day": NUMBER, "window": NUMBER}),
              "secondary": (dict, {"metric": TEXT, "visit": TEXT}), "treatments": (str, None),
              "primary": (None, {"metric": TEXT, "visit": TEXT})}


def _kind(value) -> str:
    if isinstance(value, float) and not is_number(value):
        return f"the non-finite number {value!r}"
    return {str: "the text", bool: "the boolean", int: "the number", float: "the number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__) + (f" {value!r}" if not isinstance(value, (
                list, dict)) else "")


def _check_types(doc: dict, where: str) -> None:
    """Refuse a plan.toml key of the wrong type, naming the key, what it holds and what it should hold (TOML
    holds `nan` and `inf`: a number must be finite)."""
    for key, value in doc.items():
        types, expected, example = KEY_TYPES[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise UsageError(f"{where}: `{key}` must be {expected} (e.g. {key} = {example}), not {_kind(value)}")
        item, fields = ITEM_TYPES.get(key, (None, None))
        entries = value if isinstance(value, list) else [value]
        for i, entry in enumerate(entries):
            at = f"{key}[{i}]" if isinstance(value, list) else key
            if item is not None and not isinstance(entry, item):
                raise UsageError(f"{where}: `{at}` must be {'a table' if item is dict else 'a text'} (e.g. {key} = "
                                 f"{example}), not {_kind(entry)}")
            for name, kinds in (fields or {}).items():
                got = entry.get(name)  # not `value`: the next entry's place is read from it
                if name in entry and not (is_number(got) if kinds is NUMBER else isinstance(got, kinds)):
                    raise UsageError(f"{where}: `{at}.{name}` must be {'a number' if kinds is NUMBER else 'a text'}, "
                                     f"not {_kind(got)}")
    for metric, threshold in doc.get("responders", {}).items():
        if threshold != "mdc" and not is_number(threshold):
            raise UsageError(f"{where}: `responders.{metric}` must be a number or \"mdc\", not {_kind(threshold)}")


@dataclass
class Plan:
    """The study plan (see the module docstring); `assumed` lists what was derived from the data."""

    title: str = ""
    sponsor: str = ""
    product: str = ""
    protocol: str = ""
    version: str = ""
    baseline: str | None = None
    visits: list = field(default_factory=list)
    control: str | None = None
    treatments: list = field(default_factory=list)
    primary: Endpoint | None = None
    secondary: list = field(default_factory=list)
    multiplicity: str = "fixed_sequence"
    arm_comparisons: str = "dunnett"
    alpha: float = 0.05
    qc: str = "exclude"
    windows: str = "exclude"
    covariance: str = "unstructured"
    df: str = "kenward-roger"
    variance: str = "auto"
    estimand: dict = field(default_factory=dict)
    sensitivity: dict = field(default_factory=dict)
    responders: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    generation: str | None = None
    illustration: dict = field(default_factory=dict)
    subject_columns: dict = field(default_factory=dict)
    assumed: list = field(default_factory=list)

    # ---- reading and writing --------------------------------------------------------------------------
    @classmethod
    def read(cls, study) -> Plan | None:
        """The plan stored in the study folder (None when there is none); checked as it is read."""
        path = Path(study) / FILE
        return cls.load(path) if path.exists() else None

    @classmethod
    def load(cls, path) -> Plan:
        """A plan from a TOML file; checked as it is read."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: not a readable TOML file ({e})") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = "plan") -> Plan:
        """A plan from TOML text; checked as it is read."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{where}: not a readable TOML file ({e})") from None
        return cls.from_dict(doc, where)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "plan") -> Plan:
        known = {f.name for f in dataclasses.fields(cls)} - {"assumed"}
        unknown = set(doc) - known
        if unknown:
            raise UsageError(f"{where}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        _check_types(doc, where)
        try:
            plan = cls(**{k: v for k, v in doc.items() if k not in ("visits", "primary", "secondary")})
            plan.visits = [Visit(**v) for v in doc.get("visits", [])]
            plan.primary = Endpoint(**doc["primary"]) if doc.get("primary") else None
            plan.secondary = [Endpoint(**e) for e in doc.get("secondary", [])]
        except TypeError as e:
            raise UsageError(f"{where}: {e}") from None
        plan.check()
        return plan

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "assumed" or value in (None, "", [], {}):
                continue
            if f.name == "visits":
                value = [{k: v for k, v in dataclasses.asdict(x).items() if v is not None} for x in value]
            elif f.name == "primary":
                value = dataclasses.asdict(value)
            elif f.name == "secondary":
                value = [dataclasses.asdict(e) for e in value]
            out[f.name] = value
        return out

    def write(self, study) -> Path:
        """Check the plan and store it in the study folder (atomically)."""
        import tomli_w  # the standard library reads TOML but cannot write it

        from .store import write_atomic

        self.check()
        path = Path(study) / FILE
        write_atomic(path, tomli_w.dumps(self.to_dict()).encode())
        return path

    # ---- checks -----------------------------------------------------------------------------------------
    def check(self, visits=None, arms=None) -> None:
        """Raise `UsageError` naming what is wrong; with the study's `visits` and `arms`, check against them."""
        problems = []
        if self.multiplicity not in MULTIPLICITY:
            problems.append(f"multiplicity {self.multiplicity!r} is not one of {', '.join(MULTIPLICITY)}")
        for name, allowed in (("qc", QC_HANDLING), ("arm_comparisons", ARM_COMPARISONS), ("windows", WINDOWS),
                              ("df", DF), ("covariance", COVARIANCES), ("variance", VARIANCES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.generation is not None and self.generation not in GENERATION_NAMES:
            problems.append(f"generation {self.generation!r} is not one of {', '.join(GENERATION_NAMES)}")
        unknown = set(self.estimand) - {"population", "variable", "summary", "strategies"}
        if unknown:
            problems.append(f"estimand: unknown keys {', '.join(sorted(unknown))} (population, variable, summary, "
                            "strategies)")
        for event, strategy in dict(self.estimand.get("strategies", {})).items():
            if event not in EVENTS:
                problems.append(f"estimand.strategies: unknown intercurrent event {event!r} (skintrack sees "
                                f"{', '.join(EVENTS)})")
            elif strategy not in STRATEGIES:
                problems.append(f"estimand.strategies.{event}: {strategy!r} is not one of {', '.join(STRATEGIES)}")
        problems += sensitivity_problems(self.sensitivity)
        problems += _illustration_problems(self.illustration)
        for column, meaning in self.subject_columns.items():
            if not isinstance(meaning, dict) or set(meaning) - {"name", "label"} or not all(
                    isinstance(v, str) for v in meaning.values()):
                problems.append(f"subject_columns.{column}: a table of name (the ADaM variable) and label")
            elif "name" in meaning and not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,7}", meaning["name"]):
                problems.append(f"subject_columns.{column}: name {meaning['name']!r} is not a SAS name (upper case, "
                                "letters, digits and _, at most 8 characters)")
        if not 0 < self.alpha < 0.5:
            problems.append(f"alpha {self.alpha} is not between 0 and 0.5")
        for v in self.visits:  # a window needs a finite day to be around
            if v.window is not None and not (is_number(v.window) and v.window >= 0 and is_number(v.day)):
                problems.append(f"visit {v.label}: window {v.window!r} around day {v.day!r}: a window is a finite "
                                "number of days (0 or more) around a finite day")
        labels = [v.label for v in self.visits]
        if len(set(labels)) != len(labels):
            problems.append(f"visits repeat a label ({', '.join(labels)})")
        schedule = labels or list(visits or [])
        if self.baseline is not None and schedule and self.baseline not in schedule:
            problems.append(f"baseline {self.baseline!r} is not a visit of the schedule ({', '.join(schedule)})")
        for what, e in [("primary", self.primary)] + [("secondary", e) for e in self.secondary]:
            if e is None:
                continue
            if not _known(e.metric):
                problems.append(f"{what} endpoint: unknown metric {e.metric!r} (see `skintrack metrics`)")
            if schedule and e.visit not in schedule:
                problems.append(f"{what} endpoint {e.metric}: visit {e.visit!r} is not in the schedule "
                                f"({', '.join(schedule)})")
            if e.visit == self.baseline:
                problems.append(f"{what} endpoint {e.metric}: the baseline visit cannot be an endpoint")
        for metric, threshold in self.responders.items():
            if not _known(metric):
                problems.append(f"responders: unknown metric {metric!r}")
            if threshold != "mdc" and not is_number(threshold):
                problems.append(f"responders: {metric} threshold {threshold!r} is neither a finite number nor \"mdc\"")
        for metric, model in self.models.items():
            if model not in MODELS:
                problems.append(f"models: {metric} model {model!r} is not one of {', '.join(MODELS)}")
        if self.control is not None and self.control in self.treatments:
            problems.append(f"arm {self.control!r} cannot be both the control and a treatment")
        if arms is not None:
            for arm in [self.control, *self.treatments]:
                if arm is not None and arm not in arms:
                    problems.append(f"arm {arm!r} is not in the subjects CSV (arms: {', '.join(arms) or 'none'})")
        if problems:
            raise UsageError("the study plan: " + "; ".join(problems))

    # ---- defaults from the data -------------------------------------------------------------------------
    def resolved(self, visits: list, days: dict, arms: list, events=(), measure: str | None = None) -> Plan:
        """A copy with what this plan leaves out derived from the data (`visits` in order, their median
        `days`, the `arms`, the intercurrent `events` the study records), each such field named in `assumed`.
        The primary endpoint assumed is the total score, or in a study of measures alone (no photograph's score)
        its first `measure`."""
        p = dataclasses.replace(self, visits=list(self.visits), treatments=list(self.treatments),
                                secondary=list(self.secondary), responders=dict(self.responders),
                                models=dict(self.models), estimand=dict(self.estimand),
                                sensitivity=dict(self.sensitivity), assumed=[])
        strategies = dict(p.estimand.get("strategies", {}))
        for event, strategy in DEFAULT_STRATEGY.items():
            if event not in strategies:
                strategies[event] = strategy
                if event in events:
                    p.assumed.append(f"{event}: the {strategy.replace('_', ' ')} strategy")
        p.estimand["strategies"] = strategies
        if not p.visits and visits:
            # a visit's day unknown (the data hold no dates: NaN) is left out, as a plan that names none
            p.visits = [Visit(v, days.get(v) if is_number(days.get(v)) else None) for v in visits]
            p.assumed.append("visits (every visit label in the data, in time order)")
        schedule = [v.label for v in p.visits]
        if p.baseline is None and schedule:
            p.baseline = schedule[0]
            p.assumed.append(f"baseline visit {p.baseline} (the first visit)")
        if p.control is None and arms:
            p.control = next((a for a in arms if CONTROL_NAMES.search(a)), sorted(arms)[0])
            p.assumed.append(f"control arm {p.control} (" + ("named like a control)" if CONTROL_NAMES.search(
                p.control) else "no arm is named like a control: the first by name)"))
        if not p.treatments and arms:
            p.treatments = [a for a in sorted(arms) if a != p.control]
            if p.treatments:
                p.assumed.append(f"treatment arms {', '.join(p.treatments)} (every other arm)")
        if p.primary is None and len(schedule) > 1:
            p.primary = Endpoint(measure or "score.total", schedule[-1])
            p.assumed.append(f"primary endpoint {p.primary.metric} at {schedule[-1]} (" + (
                "the study's first measure at the last visit: it holds no photograph's score)" if measure else
                "the total score at the last visit)"))
        p.check(visits, arms or None)
        return p

    @property
    def schedule(self) -> list:
        """Visit labels in order."""
        return [v.label for v in self.visits]

    @property
    def arms(self) -> list:
        """The control, then the treatments in the plan's order: the order of every table and chart."""
        return [a for a in [self.control, *self.treatments] if a]

    @property
    def endpoints(self) -> list:
        """The primary and the key secondary endpoints, in their testing order."""
        return ([self.primary] if self.primary else []) + list(self.secondary)

    def describe(self) -> str:
        """The plan in a few lines, with what was assumed."""
        lines = [f"baseline: {self.baseline}",
                 "visits: " + ", ".join(f"{v.label}" + (f" (day {v.day:g}" + (f" +/- {v.window:g}" if v.window
                                                                              is not None else "") + ")"
                                                         if v.day is not None else "") for v in self.visits),
                 f"control: {self.control}; treatments: {', '.join(self.treatments) or 'none'}",
                 "primary endpoint: " + (f"{self.primary.metric} at {self.primary.visit}" if self.primary else "none"),
                 "key secondary endpoints (testing order): " + (", ".join(f"{e.metric} at {e.visit}"
                                                                           for e in self.secondary) or "none"),
                 f"multiplicity: {self.multiplicity} at alpha {self.alpha:g}"
                 + (f"; treatment arms against the control: {self.arm_comparisons}" if len(self.treatments) > 1
                    else ""),
                 f"visit windows: {self.windows}",
                 "API generation: " + (f"{self.generation} only" if self.generation else "every generation (check "
                                       "lists subjects and endpoints whose values straddle two)"),
                 f"QC-flagged captures: {self.qc}d in the primary analysis, "
                 f"{'included' if self.qc == 'exclude' else 'excluded'} as a sensitivity analysis",
                 f"MMRM: {self.covariance} covariance, {self.df} df, {self.variance} variance",
                 "intercurrent events: " + ", ".join(f"{k} {v.replace('_', ' ')}" for k, v in
                                                     self.estimand.get("strategies", {}).items()),
                 "responder thresholds: " + (", ".join(f"{k} >= {v if v == 'mdc' else format(v, 'g')}"
                                                       for k, v in self.responders.items()) or "none"),
                 "endpoint models: " + (", ".join(f"{k}: {v}" for k, v in self.models.items())
                                        or "by the catalog's metric type"),
                 "photographs shown: " + (", ".join(self.illustration["subjects"]) if self.illustration.get("subjects")
                                          else f"{self.illustration.get('per_arm', 2)} per arm drawn at random (seed "
                                               f"{self.illustration.get('seed', 1)})")]
        if self.assumed:
            lines.append("assumed (no plan says otherwise): " + "; ".join(self.assumed))
        return "\n".join(lines)


def sensitivity_problems(settings: dict) -> list:
    """What is wrong with the sensitivity analyses' settings (methods, imputations, seed), given or planned.

    >>> sensitivity_problems({"imputations": 1, "methods": ["mi"]})
    ['sensitivity.imputations must be a whole number of at least 2, not 1']
    """
    unknown = set(settings) - {"methods", "imputations", "seed"}
    problems = [f"sensitivity: unknown key {k!r} (methods, imputations, seed)" for k in sorted(unknown)]
    problems += [f"sensitivity.methods: {method!r} is not one of {', '.join(SENSITIVITY)}"
                 for method in settings.get("methods", []) if method not in SENSITIVITY]
    for name, least in (("imputations", MIN_IMPUTATIONS), ("seed", 0)):
        try:
            whole(settings.get(name, least), f"sensitivity.{name}", least)
        except UsageError as e:
            problems.append(str(e))
    return problems


def _illustration_problems(rule: dict) -> list:
    """What is wrong with the rule that picks the subjects whose photographs the report shows."""
    problems = [f"illustration: unknown key {k!r} (subjects, per_arm, seed)" for k in sorted(set(rule) -
                                                                                          {"subjects", "per_arm", "seed"})]
    if "subjects" in rule and (not isinstance(rule["subjects"], list) or
                               not all(isinstance(x, str) for x in rule["subjects"])):
        problems.append("illustration.subjects must be a list of subject ids")
    if "subjects" in rule and ({"per_arm", "seed"} & set(rule)):
        problems.append("illustration: name the subjects, or draw them (per_arm, seed), not both")
    for name in ("per_arm", "seed"):
        if name in rule and (not isinstance(rule[name], int) or isinstance(rule[name], bool) or rule[name] < (
                1 if name == "per_arm" else 0)):
            problems.append(f"illustration.{name} must be a whole number{' of at least 1' if name == 'per_arm' else ''}")
    return problems


def _known(key: str) -> bool:
    """A key of the catalog, or a measure's (`measure.<name>`: a study's own, which the plan may name before
    its readings are ingested)."""
    from .measures import NAME

    if key.startswith("measure.") and NAME.match(key[len("measure."):]):
        return True
    try:
        metric_info(key)
    except KeyError:
        return False
    return True


STARTER = {  # what each choice of a starter plan means, written above it
    "title": "The report's title; sponsor, product, protocol and version go on its title page.",
    "baseline": "The baseline visit: every change is from it.",
    "visits": "The schedule in order: label, nominal day since baseline, allowed window (+/- days).",
    "windows": "A capture outside its visit's window: exclude, nearest (the visit whose window holds it) or "
               "nominal (take its label as it is).",
    "control": "The control arm, and the treatment arms in the order the report lists them.",
    "primary": "The primary endpoint, then the key secondary endpoints in their testing order.",
    "multiplicity": "Across endpoints: fixed_sequence (each in turn while the ones before it were rejected) or holm; "
                    "across treatment arms (arm_comparisons): dunnett, holm, dose_order or none.",
    "alpha": "Two-sided significance level.",
    "qc": "QC-flagged captures in the primary analysis: exclude (the other way as a sensitivity analysis) or include.",
    "covariance": "The MMRM's covariance (unstructured; a failed fit falls back to a heterogeneous one), degrees of "
                  "freedom (kenward-roger or satterthwaite) and variance (auto, model or empirical).",
    "responders": "Responder thresholds per metric, in its unit (or \"mdc\": the smallest detectable change).",
    "illustration": "The subjects whose photographs the report shows: per_arm drawn at random with a seed, or "
                    "subjects = [...]; never chosen by their response.",
}


def _inline(value) -> str:
    """A TOML value on one line (tables inline), so that every key of a starter plan stays at the top level."""
    import json

    import tomli_w

    if isinstance(value, dict):
        return "{" + ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else json.dumps(k)} = {_inline(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].strip()


def starter(plan: Plan, study) -> str:
    """A commented plan.toml from `plan` (the study's, with what the data say filled in), for `plan --init`.

    >>> text = starter(Plan(baseline="D0", visits=[Visit("D0", 0, 0), Visit("W4", 28, 3)], control="placebo",
    ...                     treatments=["active"], primary=Endpoint("score.total", "W4")), "trial")
    >>> Plan.parse(text).primary
    Endpoint(metric='score.total', visit='W4')
    """
    values = dataclasses.replace(plan, title=plan.title or Path(study).name,
                                 illustration=plan.illustration or {"per_arm": 2, "seed": 1}).to_dict()
    order = ["title", "sponsor", "product", "protocol", "version", "baseline", "visits", "windows", "control",
             "treatments", "primary", "secondary", "multiplicity", "arm_comparisons", "alpha", "qc", "covariance",
             "df", "variance", "responders", "illustration"]
    lines = [f"# The study plan of {Path(study).name}, started by `skintrack plan --init` from the data: check every "
             "choice before the data are unblinded.", ""]
    for key in order + [k for k in values if k not in order]:
        if key not in values:
            continue
        if key in STARTER:
            lines.append(f"# {STARTER[key]}")
        lines.append(f"{key} = {_inline(values[key])}")
    body = "\n".join(lines) + "\n"
    Plan.parse(body, "the starter plan")  # what is written reads back as a plan
    return body
