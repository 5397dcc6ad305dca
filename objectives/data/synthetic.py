"""The built-in demo task: SYNTHETIC occupation classification from short biographies.

Every text is generated here from our own templates; no real person or real biography is in it.
It imitates the structure of the Bias in Bios task (De-Arteaga et al. 2019) so that the demo shows
the effects fairfront is built to measure:

- **Imbalanced gender–occupation correlation**: each occupation has its own share of women
  (a nurse is a woman in 90% of the bios, a surgeon in 15%), so gender is a shortcut.
- **Ambiguous evidence**: some bios only carry an activity shared by two occupations (a nurse and
  a surgeon both "work long shifts at the hospital"); there the gendered pronoun or first name is
  the only cue, and a model that uses it has a gap in true-positive rate between genders.
- **Rare classes**: occupations have very different frequencies (dietitian and pilot are rare),
  so minority-class recall is what compression tends to lose first.

The group of each bio is its grammatical gender (``female`` / ``male``), taken from the template,
not guessed from a name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["OCCUPATIONS", "make_occupation_bios", "CITATION"]

CITATION = ("fairfront synthetic occupation bios (generated; structure after De-Arteaga et al. 2019, "
            "'Bias in Bios', FAT*)")

# occupation: (relative frequency, share of women, specific activities, shared-with partner)
OCCUPATIONS: dict[str, tuple[float, float, tuple[str, ...], str]] = {
    "nurse": (0.20, 0.90, ("cares for patients recovering after surgery", "gives injections and checks vital signs",
                           "works on the paediatric ward", "trains new staff in patient care"), "surgeon"),
    "surgeon": (0.12, 0.15, ("performs heart operations", "operates on broken bones",
                             "leads a transplant team in the operating theatre", "repairs damaged knees"), "nurse"),
    "software_engineer": (0.18, 0.20, ("writes code for mobile apps", "builds backend services in python",
                                       "debugs distributed systems", "reviews pull requests every morning"),
                          "architect"),
    "teacher": (0.16, 0.75, ("teaches maths to ten year olds", "grades homework in the evening",
                             "runs the school reading club", "prepares lessons on history"), "dietitian"),
    "lawyer": (0.14, 0.45, ("argues cases in court", "drafts contracts for companies",
                            "advises clients on divorce", "defends people accused of fraud"), "architect"),
    "architect": (0.10, 0.30, ("designs family houses", "draws plans for new museums",
                               "restores old city buildings", "models office towers on the computer"),
                  "software_engineer"),
    "pilot": (0.05, 0.10, ("flies passenger jets across the ocean", "lands cargo planes at night",
                           "trains cadets in the flight simulator", "checks the aircraft before take off"),
              "lawyer"),
    "dietitian": (0.05, 0.92, ("plans meals for diabetic patients", "counsels people on healthy eating",
                               "designs menus for hospital kitchens", "studies food allergies"), "teacher"),
}

# Activities two occupations share: only gender separates them in such a bio.
_SHARED = {
    frozenset({"nurse", "surgeon"}): ("works long shifts at the hospital", "wears scrubs every day",
                                      "is often called in at night for emergencies"),
    frozenset({"software_engineer", "architect"}): ("spends the day in front of two screens",
                                                    "uses design software at work"),
    frozenset({"teacher", "dietitian"}): ("gives talks to groups of children", "writes guides for parents"),
    frozenset({"lawyer", "architect"}): ("meets clients in a downtown office", "reads long documents every week"),
    frozenset({"pilot", "lawyer"}): ("travels a lot for work", "wears a formal uniform or suit at work"),
}

_FEMALE_NAMES = ("Mary", "Anna", "Sofia", "Laura", "Emma", "Julia", "Grace", "Helen", "Nina", "Clara", "Olivia",
                 "Sara", "Maya", "Lucy", "Irene", "Rosa")
_MALE_NAMES = ("John", "David", "Peter", "Marco", "James", "Paul", "Lucas", "Henry", "Omar", "Victor", "Daniel",
               "Tom", "Adam", "Leo", "Samuel", "Oscar")
_SURNAMES = ("Smith", "Garcia", "Chen", "Novak", "Okafor", "Rossi", "Silva", "Kim", "Meyer", "Haddad", "Jensen",
             "Brown", "Kowalski", "Nguyen", "Lopez", "Ivanova")
_TEMPLATES = (
    "{name} {surname} {activity}. {pron} {hobby}.",
    "{pron} {activity}. In {poss} free time {name} {hobby}.",
    "{name} has {years} years of experience and {activity}. {pron} {hobby}.",
    "Born in {city}, {name} {surname} {activity}.",
    "{name} {activity} and {hobby}.",
)
_HOBBIES = ("enjoys hiking", "plays the piano", "likes to cook", "reads novels", "runs marathons",
            "grows tomatoes", "paints landscapes", "volunteers at a shelter")
_CITIES = ("Lisbon", "Toronto", "Nairobi", "Osaka", "Leeds", "Porto", "Denver", "Krakow")
_PRONOUNS = {"female": ("She", "her"), "male": ("He", "his")}


def make_occupation_bios(n: int = 3000, *, seed: int = 0, ambiguous_fraction: float = 0.25) -> pd.DataFrame:
    """Generate ``n`` synthetic bios with columns ``text``, ``label``, ``group``.

    Args:
        n: number of bios.
        seed: the same seed gives the same bios.
        ambiguous_fraction: share of bios whose only activity is shared with a partner occupation.

    Example:
        >>> frame = make_occupation_bios(10, seed=1)
        >>> sorted(frame.columns)
        ['group', 'label', 'text']
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of bios, got {n}")
    if not 0.0 <= ambiguous_fraction <= 1.0:
        raise ValueError(f"ambiguous_fraction must be in [0, 1], got {ambiguous_fraction}")
    rng = np.random.default_rng(seed)
    names = list(OCCUPATIONS)
    freq = np.array([OCCUPATIONS[o][0] for o in names])
    labels = rng.choice(len(names), size=n, p=freq / freq.sum())
    rows = []
    for k in labels:
        occupation = names[k]
        _, female_share, activities, partner = OCCUPATIONS[occupation]
        group = "female" if rng.random() < female_share else "male"
        if rng.random() < ambiguous_fraction:
            activity = rng.choice(_SHARED[frozenset({occupation, partner})])
        else:
            activity = rng.choice(activities)
        pron, poss = _PRONOUNS[group]
        text = rng.choice(_TEMPLATES).format(
            name=rng.choice(_FEMALE_NAMES if group == "female" else _MALE_NAMES), surname=rng.choice(_SURNAMES),
            activity=activity, pron=pron, poss=poss, hobby=rng.choice(_HOBBIES), years=int(rng.integers(2, 30)),
            city=rng.choice(_CITIES))
        rows.append((text, occupation, group))
    return pd.DataFrame(rows, columns=["text", "label", "group"])
