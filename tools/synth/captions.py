"""Captions for synthetic scenes: varied English phrasings, and the WebVid-like mess.

Clean captions contain no digits, URLs or tags, so every injected defect is something a
cleaner can find and remove without touching the description itself.
"""

from __future__ import annotations

import numpy as np

from tools.synth.scene import Scene

NUMBER_WORDS = {1: "a", 2: "two", 3: "three"}
DIRECTION_WORDS = {
    "left": ("left", "to the left", "leftward"),
    "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "toward the top"),
    "down": ("down", "downward", "toward the bottom"),
}
SPEED_WORDS = {"slowly": ("slowly", "at a slow pace", "gently"),
               "quickly": ("quickly", "fast", "rapidly")}
VERBS = {"moves": "moving", "slides": "sliding", "drifts": "drifting", "travels": "traveling",
         "glides": "gliding"}
BACKGROUND_WORDS = {
    "dark": ("a dark background", "a black backdrop"),
    "grey": ("a grey background", "a plain grey backdrop"),
    "checkered": ("a checkered background", "a checkerboard floor"),
    "striped": ("a striped background", "stripes"),
    "textured": ("a textured surface", "a mottled background"),
}


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _subject(scene: Scene) -> str:
    noun = scene.shape
    if scene.count > 1:
        noun += "es" if noun.endswith("ss") else "s"
    return f"{NUMBER_WORDS[scene.count]} {scene.size} {scene.colour} {noun}"


def _verb(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    """(finite verb agreeing with the subject, gerund)."""
    verb = _pick(rng, list(VERBS))
    return (verb if scene.count == 1 else verb[:-1]), VERBS[verb]


def _path(rng: np.random.Generator, scene: Scene) -> str:
    words = [_pick(rng, DIRECTION_WORDS[d]) for d in scene.motion]
    if len(words) == 1:
        return words[0]
    return _pick(rng, (f"{words[0]}, then {words[1]}", f"{words[0]} and then {words[1]}"))


def _distractor(rng: np.random.Generator, scene: Scene) -> str:
    if scene.distractor is None:
        return ""
    thing = f"a grey {scene.distractor}"
    return _pick(rng, (f" while {thing} stays still", f" next to a still grey {scene.distractor}",
                       f" past {thing} that does not move"))


def plain_caption(scene: Scene) -> str:
    """The scene in one fixed template, one word per attribute value (presets without
    ``varied_captions``): "a large red circle moves quickly left, then up on a dark
    background"."""
    words = [DIRECTION_WORDS[d][0] for d in scene.motion]
    verb = "moves" if scene.count == 1 else "move"
    other = f" next to a still grey {scene.distractor}" if scene.distractor else ""
    return (f"{_subject(scene)} {verb} {scene.speed} {', then '.join(words)} on "
            f"{BACKGROUND_WORDS[scene.background][0]}{other}")


def english_caption(rng: np.random.Generator, scene: Scene, varied: bool = True) -> str:
    """A natural caption of the scene, in one of several phrasings (or the plain one)."""
    if not varied:
        return plain_caption(scene)
    subject, path = _subject(scene), _path(rng, scene)
    verb, ing = _verb(rng, scene)
    speed = _pick(rng, SPEED_WORDS[scene.speed])
    background = _pick(rng, BACKGROUND_WORDS[scene.background])
    other = _distractor(rng, scene)
    on_background = f" on {background}" if rng.random() < 0.6 else ""
    templates = (
        f"{subject} {verb} {speed} {path}{on_background}{other}",
        f"{subject} {verb} {path} {speed}{on_background}{other}",
        f"{subject.split(' ', 1)[1] if scene.count == 1 else subject} {ing} {path} {speed}"
        f"{on_background}{other}",
        f"close-up of {subject} {ing} {path} {speed}{on_background}{other}",
        f"on {background}, {subject} {verb} {path} {speed}{other}",
    )
    text = _pick(rng, templates)
    return text[0].upper() + text[1:] if rng.random() < 0.7 else text


# Rough but unmistakable translations, enough for a language identifier to say "not English".
_FOREIGN = {
    "de": {
        "colour": {"red": "rote", "green": "grüne", "blue": "blaue", "yellow": "gelbe",
                   "purple": "violette", "orange": "orangefarbene", "white": "weiße",
                   "pink": "rosa"},
        "shape": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "diamond": "Raute",
                  "cross": "Kreuz"},
        "dir": {"left": "nach links", "right": "nach rechts", "up": "nach oben",
                "down": "nach unten"},
        "speed": {"slowly": "langsam", "quickly": "schnell"},
        "pattern": "Eine {colour} Form ({shape}) bewegt sich {speed} {dir} vor einem dunklen "
                   "Hintergrund",
    },
    "fr": {
        "colour": {"red": "rouge", "green": "verte", "blue": "bleue", "yellow": "jaune",
                   "purple": "violette", "orange": "orange", "white": "blanche", "pink": "rose"},
        "shape": {"circle": "cercle", "square": "carré", "triangle": "triangle",
                  "diamond": "losange",
                  "cross": "croix"},
        "dir": {"left": "vers la gauche", "right": "vers la droite", "up": "vers le haut",
                "down": "vers le bas"},
        "speed": {"slowly": "lentement", "quickly": "rapidement"},
        "pattern": "Une forme {colour} ({shape}) se déplace {speed} {dir} sur un fond sombre",
    },
    "es": {
        "colour": {"red": "roja", "green": "verde", "blue": "azul", "yellow": "amarilla",
                   "purple": "morada", "orange": "naranja", "white": "blanca", "pink": "rosada"},
        "shape": {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo",
                  "diamond": "rombo", "cross": "cruz"},
        "dir": {"left": "hacia la izquierda", "right": "hacia la derecha", "up": "hacia arriba",
                "down": "hacia abajo"},
        "speed": {"slowly": "lentamente", "quickly": "rápidamente"},
        "pattern": "Una figura {colour} ({shape}) se mueve {speed} {dir} sobre un fondo oscuro",
    },
}


def foreign_caption(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    """The scene described in German, French or Spanish; returns (language code, caption)."""
    lang = _pick(rng, sorted(_FOREIGN))
    words = _FOREIGN[lang]
    text = words["pattern"].format(
        colour=words["colour"][scene.colour], shape=words["shape"][scene.shape],
        speed=words["speed"][scene.speed], dir=words["dir"][scene.motion[0]],
    )
    return lang, text


# Each mess kind adds text that a cleaning rule of the same name must remove.
BOILERPLATE = ("stock footage", "Stock Footage", "stock video", "royalty free",
               "Royalty-free stock video")
RESOLUTION_TAGS = ("4k", "4K", "HD", "UHD", "1080p", "1920x1080", "full HD", "4K UHD")
URLS = ("https://www.example-stock.com/clip/{n}", "www.footage-site.net/v/{n}", "http://bit.ly/{n}x")
TIMECODES = ("00:00:{s:02d}", "0:{s:02d}", "00:01:{s:02d}:12")
FILENAMES = ("clip_{n}.mov", "DSC{n}.MP4", "footage-{n}.mp4")
ENTITIES = ("&quot;{c}&quot;", "&#39;{c}&#39;", "{c}&nbsp;", "&ldquo;{c}&rdquo;")


def add_mess(rng: np.random.Generator, caption: str, kind: str) -> str:
    """Returns ``caption`` with one kind of WebVid-like mess added."""
    n = int(rng.integers(1000, 10_000_000))
    if kind == "boilerplate":
        tag = _pick(rng, BOILERPLATE)
        return _pick(rng, (f"{tag}: {caption}", f"{caption} - {tag}", f"{caption}. {tag}"))
    if kind == "resolution_tag":
        tag = _pick(rng, RESOLUTION_TAGS)
        return _pick(rng, (f"{caption} {tag}", f"{tag} {caption}", f"{caption} ({tag})"))
    if kind == "url":
        return f"{caption} {_pick(rng, URLS).format(n=n)}"
    if kind == "timecode":
        return f"{caption} {_pick(rng, TIMECODES).format(s=n % 60)}"
    if kind == "filename":
        return f"{_pick(rng, FILENAMES).format(n=n)} {caption}"
    if kind == "html_entity":
        return _pick(rng, ENTITIES).format(c=caption)
    raise ValueError(f"unknown mess kind {kind!r}")
