"""Synthetic W-2 (Wage and Tax Statement) pages with nested JSON ground truth for extraction."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from vlmtune.errors import VlmtuneError

from . import names
from .example import SynthExample

W2_CATEGORIES: dict[str, str] = {
    "Employee": "employee",
    "Employer": "employer",
    "Earnings": "earnings",
    "Benefits": "benefits",
    "Multi-State": "multiStateEmployment",
}

_SKELETON = {
    "employee": {"name": "string", "address": "string", "socialSecurityNumber": "string"},
    "employer": {"name": "string", "ein": "string", "address": "string"},
    "earnings": {
        "wages": "number", "socialSecurityWages": "number", "medicareWagesAndTips": "number",
        "federalIncomeTaxWithheld": "number", "stateIncomeTax": "number",
        "localWagesTips": "number", "localIncomeTax": "number",
    },
    "benefits": {"dependentCareBenefits": "number", "nonqualifiedPlans": "number"},
    "multiStateEmployment": {
        "<STATE>": {"localWagesTips": "number", "localIncomeTax": "number", "localityName": "string"},
    },
}

W2_PROMPT = (
    "Extract the fields of this W-2 form into JSON with exactly these keys:\n"
    + json.dumps(_SKELETON)
    + "\nWrite money amounts as numbers with two decimals. Key multiStateEmployment by each state's"
    " two-letter code (box 15), one entry per state row. earnings.stateIncomeTax, localWagesTips and"
    " localIncomeTax are totals over all state rows. Reply with the JSON only."
)

NOISE_OPTIONS: tuple[str, ...] = ("none", "scan")

# Social security wage base per tax year: box 3 is capped here, so boxes 3 and 5 can differ.
_SS_WAGE_BASE = {2019: 132900, 2020: 137700, 2021: 142800, 2022: 147000, 2023: 160200, 2024: 168600}
_BASE_W, _BASE_H = 612, 792  # layout is written in US-letter points and scaled to image_size
_L, _MID, _C2, _R = 36, 306, 441, 576  # column edges of the box grid


def _fmt(cents: int) -> str:
    """Cents as printed on the form: 52,341.07."""
    return f"{cents // 100:,}.{cents % 100:02d}"


def _cents(rng: random.Random, lo: float, hi: float) -> int:
    """A uniform amount in dollars [lo, hi], in integer cents (exact 2-decimal values)."""
    return rng.randint(round(lo * 100), round(hi * 100))


def _address(rng: random.Random, city: tuple[str, str, str]) -> tuple[str, str]:
    """Street line and city line of an address in the given (city, state, ZIP)."""
    street = f"{rng.randint(10, 9899)} {rng.choice(names.STREET_NAMES)}"
    return street, f"{city[0]}, {city[1]} {city[2]}"


def _state_rows(rng: random.Random, home: str, wages: int) -> list[dict]:
    """One or two state rows (boxes 15-20) that split the wages between states."""
    states = [home]
    if rng.random() < 0.4:
        states.append(rng.choice([s for s in names.STATES if s != home]))
    first = round(wages * rng.uniform(0.3, 0.7)) if len(states) == 2 else wages
    rows = []
    for state, state_wages in zip(states, [first, wages - first][: len(states)], strict=True):
        city = rng.choice([c for c in names.CITIES if c[1] == state])
        rows.append({
            "state": state,
            "id": f"{rng.randint(100, 999)}-{rng.randint(1000, 9999)}-{rng.randint(0, 9)}",
            "wages": state_wages,
            "tax": round(state_wages * rng.uniform(0.02, 0.06)),
            "local_wages": state_wages,
            "local_tax": round(state_wages * rng.uniform(0.005, 0.025)),
            "locality": city[0].upper(),
        })
    return rows


def _sample_form(rng: random.Random) -> dict:
    """Every printed value of one form (money in cents) plus the tax year."""
    year = rng.randint(2019, 2024)
    wages = _cents(rng, 18000, 185000)
    deferral = round(wages * rng.uniform(0.0, 0.08)) if rng.random() < 0.7 else 0
    medicare = wages + deferral  # 401(k) deferrals leave box 1 but stay in Medicare wages
    ss = min(medicare, _SS_WAGE_BASE[year] * 100)
    emp_city = rng.choice(names.CITIES)
    mi = f" {rng.choice('ABCDEFGHJKLMNPRSTW')}." if rng.random() < 0.5 else ""
    return {
        "year": year,
        "ssn": f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        "ein": f"{rng.randint(10, 98)}-{rng.randint(1000000, 9999999)}",
        "employer": rng.choice(names.COMPANY_NAMES),
        "employer_addr": _address(rng, rng.choice(names.CITIES)),
        "employee": f"{rng.choice(names.FIRST_NAMES)}{mi} {rng.choice(names.LAST_NAMES)}",
        "employee_addr": _address(rng, emp_city),
        "control": f"{rng.randint(0, 99999):05d}",
        "wages": wages,
        "federal": round(wages * rng.uniform(0.08, 0.22)),
        "ss": ss,
        "ss_tax": round(ss * 0.062),
        "medicare": medicare,
        "medicare_tax": round(medicare * 0.0145),
        "dependent_care": _cents(rng, 500, 5000) if rng.random() < 0.5 else 0,
        "nonqualified": _cents(rng, 1000, 25000) if rng.random() < 0.4 else 0,
        "box12": [("D", deferral)] * (deferral > 0) + [("DD", _cents(rng, 3000, 18000))],
        "states": _state_rows(rng, emp_city[1], wages),
    }


def _truth(form: dict) -> dict:
    """The nested ground truth; earnings' state/local totals are sums over the state rows."""
    rows = form["states"]
    return {
        "employee": {
            "name": form["employee"],
            "address": ", ".join(form["employee_addr"]),
            "socialSecurityNumber": form["ssn"],
        },
        "employer": {"name": form["employer"], "ein": form["ein"], "address": ", ".join(form["employer_addr"])},
        "earnings": {
            "wages": form["wages"] / 100,
            "socialSecurityWages": form["ss"] / 100,
            "medicareWagesAndTips": form["medicare"] / 100,
            "federalIncomeTaxWithheld": form["federal"] / 100,
            "stateIncomeTax": sum(r["tax"] for r in rows) / 100,
            "localWagesTips": sum(r["local_wages"] for r in rows) / 100,
            "localIncomeTax": sum(r["local_tax"] for r in rows) / 100,
        },
        "benefits": {
            "dependentCareBenefits": form["dependent_care"] / 100,
            "nonqualifiedPlans": form["nonqualified"] / 100,
        },
        "multiStateEmployment": {
            r["state"]: {
                "localWagesTips": r["local_wages"] / 100,
                "localIncomeTax": r["local_tax"] / 100,
                "localityName": r["locality"],
            }
            for r in rows
        },
    }


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont:
    """Pillow's scalable default font at a pixel size (cached: loading is the slow part)."""
    return ImageFont.load_default(size=px)


class _Page:
    """Drawing helpers in 612x792 layout units, scaled to the real image size."""

    def __init__(self, img: Image.Image):
        self.img, self.draw = img, ImageDraw.Draw(img)
        self.sx, self.sy = img.width / _BASE_W, img.height / _BASE_H
        self.line = max(1, round(min(self.sx, self.sy)))

    def font(self, pt: float) -> ImageFont.FreeTypeFont:
        """The default font at a layout size."""
        return _font(max(5, round(pt * min(self.sx, self.sy))))

    def text(self, x: float, y: float, s: str, pt: float, bold: bool = False, anchor: str = "la") -> None:
        """Text at layout coordinates; bold is a thin stroke since the default font has no bold face."""
        self.draw.text((x * self.sx, y * self.sy), s, font=self.font(pt), fill=(0, 0, 0),
                       anchor=anchor, stroke_width=int(bold), stroke_fill=(0, 0, 0))

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """A thin-outlined rectangle at layout coordinates."""
        self.draw.rectangle([x0 * self.sx, y0 * self.sy, x1 * self.sx, y1 * self.sy],
                            outline=(0, 0, 0), width=self.line)

    def wrap(self, s: str, pt: float, width: float) -> list[str]:
        """Greedy word wrap of s to a layout width."""
        font, lines = self.font(pt), [""]
        for word in s.split():
            trial = f"{lines[-1]} {word}".strip()
            fits = font.getlength(trial) <= width * self.sx
            lines[-1:] = [trial] if fits or not lines[-1] else [lines[-1], word]
        return lines if lines[0] else []


Getter = Callable[[dict], list[str]]


def _money(key: str) -> Getter:
    """Getter printing one money field of the form."""
    return lambda f: [_fmt(f[key])]


def _box12(k: int) -> Getter:
    """Getter for box 12a/b/c: code and amount, when the form has a k-th entry."""
    return lambda f: [f"{f['box12'][k][0]}   {_fmt(f['box12'][k][1])}"] if k < len(f["box12"]) else []


def _state(col: int, k: int) -> Getter:
    """Getter for column col (boxes 15-20) of state row k, empty when the form has fewer rows."""
    def get(f: dict) -> list[str]:
        if k >= len(f["states"]):
            return []
        r = f["states"][k]
        return [[r["state"], r["id"], _fmt(r["wages"]), _fmt(r["tax"]), _fmt(r["local_wages"]),
                 _fmt(r["local_tax"]), r["locality"]][col]]
    return get


_NONE: Getter = lambda f: []  # noqa: E731 - boxes printed empty
_STATE_COLS = (  # (label, width) of boxes 15-20 across the bottom of the form
    ("15 State", 36), ("Employer's state ID number", 96), ("16 State wages, tips, etc.", 82),
    ("17 State income tax", 72), ("18 Local wages, tips, etc.", 82), ("19 Local income tax", 72),
    ("20 Locality name", 100),
)


@lru_cache(maxsize=1)
def _layout() -> tuple[tuple[tuple[float, float, float, float], str, Getter, float], ...]:
    """Every box as (rect, label, value getter, value size), placed as on the real form."""
    row = lambda k: 132 + 44 * k  # noqa: E731 - top edge of grid row k
    cells = [
        ((_L, 92, _MID, 132), "a Employee's social security number", lambda f: [f["ssn"]], 13),
        ((_MID, 92, _R, 132), "OMB No. 1545-0008", lambda f: ["Safe, accurate, FAST! Use e-file"], 9),
        ((_L, row(0), _MID, row(1)), "b Employer identification number (EIN)", lambda f: [f["ein"]], 12),
        ((_L, row(1), _MID, row(4)), "c Employer's name, address, and ZIP code",
         lambda f: [f["employer"], *f["employer_addr"]], 12),
        ((_L, row(4), _MID, row(5)), "d Control number", lambda f: [f["control"]], 12),
        ((_L, row(5), _MID, row(6)), "e Employee's first name and initial, last name",
         lambda f: [f["employee"]], 12),
        ((_L, row(6), _MID, row(8)), "f Employee's address and ZIP code", lambda f: list(f["employee_addr"]), 12),
    ]
    right = [
        ("1 Wages, tips, other compensation", _money("wages")), ("2 Federal income tax withheld", _money("federal")),
        ("3 Social security wages", _money("ss")), ("4 Social security tax withheld", _money("ss_tax")),
        ("5 Medicare wages and tips", _money("medicare")), ("6 Medicare tax withheld", _money("medicare_tax")),
        ("7 Social security tips", _NONE), ("8 Allocated tips", _NONE),
        ("9", _NONE), ("10 Dependent care benefits", _money("dependent_care")),
        ("11 Nonqualified plans", _money("nonqualified")), ("12a See instructions for box 12", _box12(0)),
        ("13 Statutory employee / Retirement plan / Third-party sick pay", _NONE), ("12b", _box12(1)),
        ("14 Other", _NONE), ("12c", _box12(2)),
    ]
    for k, (label, get) in enumerate(right):
        x0, x1 = (_MID, _C2) if k % 2 == 0 else (_C2, _R)
        cells.append(((x0, row(k // 2), x1, row(k // 2 + 1)), label, get, 12))
    x, top = _L, 494  # state/local table: a label row, then two data rows
    for col, (label, width) in enumerate(_STATE_COLS):
        cells.append(((x, top, x + width, top + 24), label, _NONE, 11))
        for k in range(2):
            cells.append(((x, top + 24 + 28 * k, x + width, top + 52 + 28 * k), "", _state(col, k), 11))
        x += width
    return tuple(cells)


@lru_cache(maxsize=4)
def _template(size: tuple[int, int]) -> tuple[Image.Image, tuple[float, ...]]:
    """The blank form (boxes, labels, static text) and each box's value top; drawn once per size."""
    page = _Page(Image.new("RGB", size, (255, 255, 255)))
    page.text(_L, 40, "Form W-2 Wage and Tax Statement", 20, bold=True)
    page.text(_L, 68, "Copy B - To Be Filed With Employee's FEDERAL Tax Return", 9)
    page.text(_R, 72, "Department of the Treasury - Internal Revenue Service", 8, anchor="ra")
    page.text(_L, 586, "This information is being furnished to the Internal Revenue Service.", 8)
    tops = []
    for (x0, y0, x1, y1), label, _, _ in _layout():
        page.rect(x0, y0, x1, y1)
        lines = page.wrap(label, 7.5, x1 - x0 - 6)
        for j, line in enumerate(lines):
            page.text(x0 + 3, y0 + 2 + 9 * j, line, 7.5)
        tops.append(y0 + 5 + 9 * len(lines))
    for j in range(3):  # box 13 check boxes
        page.rect(_MID + 20 + 40 * j, 158 + 44 * 6, _MID + 30 + 40 * j, 168 + 44 * 6)
    return page.img, tuple(tops)


def _render(form: dict, size: tuple[int, int]) -> Image.Image:
    """Fill a copy of the blank form with this form's values."""
    blank, tops = _template(size)
    page = _Page(blank.copy())
    page.text(_R, 36, str(form["year"]), 28, bold=True, anchor="ra")
    for ((x0, _, _, _), _, get, pt), top in zip(_layout(), tops, strict=True):
        for j, value in enumerate(get(form)):
            page.text(x0 + 6, top + (pt + 3) * j, value, pt)
    if form["box12"][0][0] == "D":  # a 401(k) deferral means "Retirement plan" is ticked
        page.text(_MID + 62, 158 + 44 * 6, "X", 9)
    return page.img


@lru_cache(maxsize=4)
def _noise_field(size: tuple[int, int]) -> Image.Image:
    """Gaussian noise (sigma 6, centred on 128) larger than the page, drawn once per size."""
    w, h = size[0] + 64, size[1] + 64
    noise = np.random.default_rng(0).standard_normal((h, w), np.float32) * 6.0 + 128.0
    gray = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "L")
    return Image.merge("RGB", (gray, gray, gray))  # luminance noise, like a scanner sensor


def _scan(img: Image.Image, rng: random.Random) -> Image.Image:
    """Make a clean page look scanned: tilt, optical blur, paper tint, sensor noise."""
    # The clean page is black on white, so tilt and blur one gray band: 3-4x cheaper than RGB.
    gray = img.convert("L").rotate(rng.uniform(-1.5, 1.5), Image.Resampling.BILINEAR, fillcolor=255)
    gray = gray.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.7)))
    base = rng.uniform(0.86, 0.95)  # gray-ish paper: equal channels, a faint warm or cool cast
    tint = (base + rng.uniform(0, 0.02), base + rng.uniform(0, 0.02), base + rng.uniform(-0.02, 0.01))
    img = Image.merge("RGB", [gray.point([round(v * t) for v in range(256)]) for t in tint])
    # A random window of one cached field keeps noise per-(seed, i) without sampling 1.4M normals each time.
    dx, dy = rng.randrange(64), rng.randrange(64)
    noise = _noise_field(img.size).crop((dx, dy, dx + img.width, dy + img.height))
    return ImageChops.add(img, noise, scale=1.0, offset=-128)


def generate_w2(
    n: int, seed: int = 0, noise: str = "none", image_size: tuple[int, int] = (612, 792)
) -> list[SynthExample]:
    """Generate n synthetic W-2 extraction examples.

    ``truth`` is the nested dict described by ``W2_PROMPT``; ``earnings.stateIncomeTax``,
    ``earnings.localWagesTips`` and ``earnings.localIncomeTax`` are the sums over the 1-2
    state rows. Example i depends only on (seed, i); noise="scan" draws the same forms
    with a deterministic scanner look.

    Args:
        n: Number of examples.
        seed: Dataset seed.
        noise: "none" for clean renders or "scan" for tilt, blur, tint and pixel noise.
        image_size: (width, height) of the RGB page in pixels.

    Returns:
        A list of ``SynthExample`` with ``kind == "w2"`` and a fenced JSON ``answer``.

    Example:
        >>> ex = generate_w2(1, seed=3)[0]
        >>> ex.image.size, sorted(ex.truth) == sorted(W2_CATEGORIES.values())
        ((612, 792), True)
    """
    if noise not in NOISE_OPTIONS:
        raise VlmtuneError(f"noise: expected one of {', '.join(NOISE_OPTIONS)}; found {noise!r}")
    if n < 0:
        raise VlmtuneError(f"n: expected a count >= 0; found {n}")
    out = []
    for i in range(n):
        rng = random.Random(f"w2-{seed}-{i}")
        form = _sample_form(rng)
        img = _render(form, tuple(image_size))
        if noise == "scan":
            img = _scan(img, rng)
        truth = _truth(form)
        answer = "```json\n" + json.dumps(truth) + "\n```"
        out.append(SynthExample(f"w2-{i:06d}", img, W2_PROMPT, answer, truth, "w2"))
    return out
