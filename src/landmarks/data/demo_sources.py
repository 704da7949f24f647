"""The real photographs behind mini-landmarks: where they come from and how they are cached.

Two sources:

* "gcompris": the Debian package gcompris-qt-data (educational software; photos mostly from
  Wikimedia Commons, each credited in a README inside the package). It is fetched with
  `apt-get download` (no system-wide install), unpacked with `dpkg-deb -x` in a temporary
  folder, and the WebP photos of four activities are read out of the Qt resource files (.rcc)
  and cached under `<cache>/gcompris-photos/` (about 8 MB), so later builds need neither apt nor
  the 44 MB package.
* "fallback": photographs bundled with scikit-image and scikit-learn (no download at all), for
  machines without apt/dpkg-deb (e.g. macOS) or where the download fails.

`load_photos(source)` returns a `PhotoSet`; "auto" tries gcompris and falls back, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from landmarks.data.qt_resources import read_rcc
from landmarks.errors import ConfigError, DataError

SOURCES = ("auto", "gcompris", "fallback")
PACKAGE = "gcompris-qt-data"
RCC_DIR = "usr/share/gcompris-qt/rcc"
CACHE_NAME = "gcompris-photos"
CACHE_FORMAT = 1
WORKING_SIDE = 640  # px: photos are reduced once to this longest side before views are drawn

# Activity -> (cache folder, folder of its photos inside the rcc), checked on gcompris-qt-data 3.1.
_ACTIVITIES = {
    "explore_monuments": ("monuments", "gcompris/src/activities/explore_monuments/resource/"),
    "categorization": (
        "monuments_small",
        "gcompris/src/activities/categorization/resource/images/monuments/",
    ),
    "erase": ("animals_erase", "gcompris/src/activities/erase/resource/"),
    "explore_world_animals": (
        "animals_world",
        "gcompris/src/activities/explore_world_animals/resource/animals/",
    ),
}
_ANIMAL_GROUPS = ("animals_erase", "animals_world")

# categorization photo -> the explore_monuments landmark it shows, for the photos that are a
# DIFFERENT photograph of that landmark (their credited source files differ, and they do not match
# pixel for pixel). colosseum, brandenburgGate and greatPyramid are downscaled copies of the very
# photographs in explore_monuments (same source file, correlation 0.9999), so they are not used.
# victoriaMemorial is the one in London, explore_monuments' is the one in Kolkata: a different
# landmark, so it stays an out-of-set landmark photo (empty ground truth).
SECOND_PHOTOS = {
    "eiffelTower": "france/eiffelTower",
    "tajMahal": "wonders/tajMahal",
    "statueOfLiberty": "usa/statueofLiberty",
    "christTheRedeemer": "wonders/christTheRedeemer",
    "kutubMinar": "india/qutubMinar",
    "mountRushmore": "usa/mountRushmore",
    "greatWall": "wonders/greatWallofChina",
}
SAME_PHOTOGRAPHS = ("colosseum", "brandenburgGate", "greatPyramid")

# explore_monuments file stem -> landmark name (file stems are camelCase and not always clean).
LANDMARK_NAMES = {
    "canyondeChelly": "Canyon de Chelly",
    "georgeWashingtonBirthplace": "George Washington Birthplace",
    "lincolnMemorial": "Lincoln Memorial",
    "navajo": "Navajo National Monument (Betatakin)",
    "cabrillo": "Cabrillo National Monument",
    "mountRushmore": "Mount Rushmore",
    "statueofLiberty": "Statue of Liberty",
    "castillodeSanMarcos": "Castillo de San Marcos",
    "fortSumter": "Fort Sumter",
    "castleClinton": "Castle Clinton",
    "meidumPyramid": "Meidum Pyramid",
    "greatPyramidOfGiza": "Great Pyramid of Giza",
    "bentPyramid": "Bent Pyramid",
    "redPyramid": "Red Pyramid",
    "greatStupa": "Great Stupa of Sanchi",
    "gatewayofIndia": "Gateway of India",
    "konarkSunTemple": "Konark Sun Temple",
    "charminar": "Charminar",
    "hawaMahal": "Hawa Mahal",
    "rangGhar": "Rang Ghar",
    "victoriaMemorial": "Victoria Memorial, Kolkata",
    "mysorePalace": "Mysore Palace",
    "goldenTemple": "Golden Temple",
    "ajantaCave": "Ajanta Caves",
    "qutubMinar": "Qutub Minar",
    "chateaudeChambord": "Chateau de Chambord",
    "pontduGard": "Pont du Gard",
    "palaisdesPapes": "Palais des Papes",
    "reimsCathedral": "Reims Cathedral",
    "eiffelTower": "Eiffel Tower",
    "citedeCarcassonne": "Cite de Carcassonne",
    "arlesAmphitheater": "Arles Amphitheatre",
    "chateaudeChenonceau": "Chateau de Chenonceau",
    "montStMichel": "Mont-Saint-Michel",
    "rocamadour": "Rocamadour",
    "berlinCathedral": "Berlin Cathedral",
    "schwerinPalace": "Schwerin Palace",
    "trierImperialBaths": "Trier Imperial Baths",
    "aulaPalatina": "Aula Palatina (Basilica of Constantine)",
    "brandenburgGate": "Brandenburg Gate",
    "neuschwansteinCastle": "Neuschwanstein Castle",
    "wormsCathedral": "Worms Cathedral",
    "machuPicchu": "Machu Picchu",
    "tajMahal": "Taj Mahal",
    "chichenItza": "Chichen Itza",
    "colosseum": "Colosseum",
    "petra": "Petra",
    "greatWallofChina": "Great Wall of China",
    "christTheRedeemer": "Christ the Redeemer",
}
# Upstream README typos: the name in the README -> the file it credits.
_README_TYPOS = {"germany/audaPalatina.webp": "germany/aulaPalatina.webp"}


@dataclass(frozen=True)
class Photo:
    """One source photograph: `key` is stable across builds (e.g. "monuments/france/eiffelTower"),
    `image` an RGB PIL image with longest side at most WORKING_SIDE px."""

    key: str
    name: str
    image: Image.Image
    origin: str  # file the photo came from, e.g. "explore_monuments.rcc:.../eiffelTower.webp"
    author: str = ""
    license: str = ""
    url: str = ""


@dataclass
class PhotoSet:
    """Photos sorted by role. `second_photos` maps a landmark key to other real photographs of it;
    `other_landmarks` are landmark photos of places absent from `landmarks`; `distractors` are
    photos of no landmark at all."""

    source: str  # "gcompris" or "fallback"
    description: str  # e.g. "gcompris-qt-data 3.1-2"
    landmarks: list[Photo]
    second_photos: dict[str, list[Photo]] = field(default_factory=dict)
    other_landmarks: list[Photo] = field(default_factory=list)
    distractors: list[Photo] = field(default_factory=list)


class SourceUnavailable(Exception):
    """The gcompris source cannot be obtained on this machine (no apt, download failed...)."""


def default_cache_dir() -> Path:
    """`$LANDMARKS_CACHE`, else ~/.cache/landmarks."""
    return Path(os.environ.get("LANDMARKS_CACHE") or Path.home() / ".cache" / "landmarks")


def load_photos(
    source: str = "auto",
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> PhotoSet:
    """The photos of `source` ("auto", "gcompris" or "fallback"); `log` hears which was used."""
    if source not in SOURCES:
        raise ConfigError(f"unknown demo data source {source!r}; expected one of {SOURCES}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if source in ("auto", "gcompris"):
        try:
            photos = load_gcompris(cache, log)
        except SourceUnavailable as reason:
            if source == "gcompris":
                raise DataError(f"source 'gcompris' is unavailable: {reason}") from reason
            log(f"gcompris-qt-data unavailable ({reason}); using the fallback photos")
        else:
            log(f"source: {photos.description} (photos cached in {cache / CACHE_NAME})")
            return photos
    photos = load_fallback()
    log(f"source: {photos.description}")
    return photos


# --- gcompris-qt-data ----------------------------------------------------------------------


def load_gcompris(cache: Path, log: Callable[[str], None] = print) -> PhotoSet:
    """Photos from the cache, fetching and extracting the Debian package first if needed."""
    photo_dir = cache / CACHE_NAME
    if not _cache_complete(photo_dir):
        fetch_gcompris_photos(photo_dir, log)
    return _photo_set_from_cache(photo_dir)


def _cache_complete(photo_dir: Path) -> bool:
    try:
        marker = json.loads((photo_dir / "complete.json").read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == CACHE_FORMAT


def fetch_gcompris_photos(photo_dir: Path, log: Callable[[str], None] = print) -> None:
    """Download the package, extract the photos and credits of the four activities into
    `photo_dir` (written beside it, renamed when complete)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SourceUnavailable(f"`{tool}` is not installed")
    photo_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gcompris-", dir=photo_dir.parent) as work:
        work_dir = Path(work)
        log(f"downloading {PACKAGE} with apt-get (about 44 MB, once)")
        deb = _apt_download(work_dir, log)
        extract = work_dir / "extract"
        _run(["dpkg-deb", "-x", str(deb), str(extract)], "dpkg-deb -x")
        staging = work_dir / "photos"
        count = extract_rcc_photos(extract / RCC_DIR, staging)
        copyright_file = extract / "usr/share/doc" / PACKAGE / "copyright"
        if copyright_file.exists():
            shutil.copyfile(copyright_file, staging / "debian-copyright")
        version = deb.name.split("_")[1] if deb.name.count("_") >= 2 else "unknown"
        marker = {"format": CACHE_FORMAT, "package": PACKAGE, "version": version, "files": count}
        (staging / "complete.json").write_text(json.dumps(marker, indent=1) + "\n")
        if photo_dir.exists():
            shutil.rmtree(photo_dir)
        staging.rename(photo_dir)
    log(f"cached {count} photos of {PACKAGE} {version} in {photo_dir}")


def _apt_download(work_dir: Path, log: Callable[[str], None]) -> Path:
    """`apt-get download` into `work_dir`; when the package lists are missing, `apt-get update`
    once and retry. Returns the .deb path."""
    try:
        _run(["apt-get", "download", PACKAGE], "apt-get download", cwd=work_dir)
    except SourceUnavailable as first:
        log(f"apt-get download failed ({first}); running apt-get update once and retrying")
        _run(["apt-get", "update"], "apt-get update")
        _run(["apt-get", "download", PACKAGE], "apt-get download", cwd=work_dir)
    debs = sorted(work_dir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise SourceUnavailable("apt-get download produced no .deb file")
    return debs[0]


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SourceUnavailable(f"{what}: {error}") from error
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("W:")]
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        raise SourceUnavailable(f"{what}: {detail}")


def extract_rcc_photos(rcc_dir: Path, out_dir: Path) -> int:
    """Write the WebP photos of the four activities to `out_dir/<group>/<path>.webp` and their
    credits (parsed from the READMEs beside them) to `out_dir/credits.json`; returns the count.
    Raises DataError naming the rcc file when one is corrupt or missing."""
    credits: dict[str, dict[str, str]] = {}
    count = 0
    for activity, (group, prefix) in _ACTIVITIES.items():
        rcc = rcc_dir / f"{activity}.rcc"
        if not rcc.exists():
            raise DataError(f"{rcc}: missing from {PACKAGE}; the package layout has changed")
        files = read_rcc(rcc, include=lambda path, p=prefix: path.startswith(p))
        for path, content in sorted(files.items()):
            relative = path[len(prefix) :]
            if relative.endswith(".webp"):
                target = out_dir / group / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                count += 1
            elif relative.endswith("README"):
                folder = relative[: -len("README")]
                readme = content.decode("utf-8", errors="replace")
                for name, credit in parse_credits(readme).items():
                    credits[f"{group}/{folder}{name}"] = credit
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "credits.json").write_text(json.dumps(credits, indent=1, sort_keys=True) + "\n")
    return count


def parse_credits(readme: str) -> dict[str, dict[str, str]]:
    """Per-file credits of a GCompris resource README: blocks of `Key: value` lines separated by
    blank lines, `Files:` followed by file names on the same or the next lines.
    Returns {file name: {"author", "license", "url"}}."""
    credits: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", readme):
        fields: dict[str, str] = {}
        files: list[str] = []
        in_files = False
        for line in block.splitlines():
            match = re.match(r"^(\w[\w-]*):\s*(.*)$", line.strip())
            if match and not line.startswith((" ", "\t")):
                key, value = match.group(1).lower(), match.group(2).strip()
                in_files = key == "files"
                if in_files:
                    files.extend(value.split())
                else:
                    fields[key] = value
            elif in_files:
                files.extend(line.split())
        for name in files:
            name = _README_TYPOS.get(name, name)
            credits[name] = {
                "author": fields.get("copyright", ""),
                "license": fields.get("license", ""),
                "url": fields.get("source", ""),
            }
    return credits


def _photo_set_from_cache(photo_dir: Path) -> PhotoSet:
    marker = json.loads((photo_dir / "complete.json").read_text())
    credits = json.loads((photo_dir / "credits.json").read_text())

    def photo(group: str, relative: str, name: str) -> Photo:
        path = photo_dir / group / relative
        credit = credits.get(f"{group}/{relative}", {})
        activity = next(a for a, (g, _) in _ACTIVITIES.items() if g == group)
        return Photo(
            key=f"{group}/{relative[: -len('.webp')]}",
            name=name,
            image=_open_working_image(path),
            origin=f"{activity}.rcc:{relative}",
            author=credit.get("author", ""),
            license=credit.get("license", ""),
            url=credit.get("url", ""),
        )

    monument_files = sorted(
        p.relative_to(photo_dir / "monuments").as_posix()
        for p in (photo_dir / "monuments").rglob("*.webp")
    )
    landmarks = [photo("monuments", f, _landmark_name(Path(f).stem)) for f in monument_files]
    if len(landmarks) < 10:
        raise DataError(
            f"{photo_dir}: only {len(landmarks)} monument photos found (expected about 49); "
            "delete the folder to fetch the package again"
        )
    by_relative = {f[: -len(".webp")]: lm for f, lm in zip(monument_files, landmarks, strict=True)}
    second: dict[str, list[Photo]] = {}
    others: list[Photo] = []
    for path in sorted((photo_dir / "monuments_small").glob("*.webp")):
        stem = path.stem
        if stem in SAME_PHOTOGRAPHS:
            continue
        target = by_relative.get(SECOND_PHOTOS.get(stem, ""))
        if target is not None:
            second.setdefault(target.key, []).append(
                photo("monuments_small", path.name, target.name)
            )
        else:
            others.append(photo("monuments_small", path.name, _split_camel(stem)))
    animals = [
        photo(group, p.name, p.stem.replace("_", " "))
        for group in _ANIMAL_GROUPS
        for p in sorted((photo_dir / group).glob("*.webp"))
    ]
    version = marker.get("version", "unknown")
    return PhotoSet(
        source="gcompris",
        description=f"{PACKAGE} {version}",
        landmarks=landmarks,
        second_photos=second,
        other_landmarks=others,
        distractors=animals,
    )


def _landmark_name(stem: str) -> str:
    return LANDMARK_NAMES.get(stem) or _split_camel(stem)


def _split_camel(stem: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem).replace("_", " ").strip().capitalize()


def _open_working_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return _working_copy(image)
    except (OSError, SyntaxError) as error:
        raise DataError(
            f"{path}: cannot decode cached photo ({error}); delete the cache"
        ) from error


def _working_copy(image: Image.Image) -> Image.Image:
    """RGB copy with longest side at most WORKING_SIDE px (Lanczos, deterministic)."""
    image = image.convert("RGB")
    scale = WORKING_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=1.5)
    return image


# --- fallback: photos bundled with scikit-image and scikit-learn -------------------------


def load_fallback() -> PhotoSet:
    """Ten bundled colour photos as landmarks (the stereo motorcycle's right view as the one real
    second photograph), bundled grey-level photos and textures as distractors."""
    import skimage.data as skdata
    from sklearn.datasets import load_sample_images

    def photo(key: str, name: str, array: np.ndarray, origin: str, licence: str) -> Photo:
        array = np.asarray(array)
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        image = _working_copy(Image.fromarray(array[..., :3].astype(np.uint8)))
        return Photo(key=key, name=name, image=image, origin=origin, license=licence)

    def sk(name: str, title: str, licence: str) -> Photo:
        return photo(
            f"skimage/{name}", title, getattr(skdata, name)(), f"skimage.data.{name}", licence
        )

    left, right, _ = skdata.stereo_motorcycle()
    samples = load_sample_images()
    sklearn_images = {
        Path(f).stem: im for f, im in zip(samples.filenames, samples.images, strict=True)
    }
    cc_by = "CC-BY-2.0 (sklearn/datasets/images/README.txt)"
    middlebury = "Middlebury 2014 stereo data set (see skimage.data.stereo_motorcycle)"

    def sklearn(name: str, title: str) -> Photo:
        origin = f"sklearn.datasets:{name}.jpg"
        return photo(f"sklearn/{name}", title, sklearn_images[name], origin, cc_by)

    def stereo_view(side: str, index: int, array) -> Photo:
        origin = f"skimage.data.stereo_motorcycle[{index}]"
        return photo(f"skimage/motorcycle_{side}", "Motorcycle", array, origin, middlebury)

    motorcycle = stereo_view("left", 0, left)
    landmarks = [
        sk("astronaut", "Astronaut", "public domain (NASA)"),
        sk("coffee", "Coffee cup", "CC0 (Rachel Michetti)"),
        sk("chelsea", "Chelsea the cat", "CC0 (Stefan van der Walt)"),
        sk("rocket", "Rocket launch", "public domain (SpaceX)"),
        sk("hubble_deep_field", "Hubble deep field", "public domain (NASA)"),
        sk("immunohistochemistry", "Immunohistochemistry", "no known copyright restrictions"),
        sk("retina", "Retina", "CC0 / public domain"),
        motorcycle,
        sklearn("china", "Temple in China"),
        sklearn("flower", "Flower"),
    ]
    second = {motorcycle.key: [stereo_view("right", 1, right)]}
    distractors = [
        sk(name, name, licence)
        for name, licence in (
            ("camera", "CC0 (Lav Varshney)"),
            ("coins", "no known copyright restrictions"),
            ("brick", "CC0 (CC0Textures)"),
            ("grass", "CC0 (CC0Textures)"),
            ("gravel", "CC0 (CC0Textures)"),
            ("text", "public domain"),
        )
    ]
    return PhotoSet(
        source="fallback",
        description="fallback photos bundled with scikit-image and scikit-learn",
        landmarks=landmarks,
        second_photos=second,
        distractors=distractors,
    )
