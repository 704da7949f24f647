"""landmarks.kaggle (client, wheels, install) against fake `kaggle` and `pip` executables that
record their argv.

No network: a tmp folder holding the fakes is put first on PATH; each fake appends its argument
list (one JSON line) to $FAKE_LOG and imitates the real tool's effect on disk.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from landmarks.cli import main
from landmarks.errors import ConfigError, DataError, LandmarksError
from landmarks.kaggle import client as kaggle_io
from landmarks.kaggle import install, wheels

REPO = Path(__file__).resolve().parents[1]

SECRET = "s3cr3t-KEY-0123456789abcdef"

FAKE_KAGGLE = """
import json, os, sys, zipfile
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["kaggle", *args]) + "\\n")
# A careless tool could echo the key: the wrapper must redact it.
print("authenticated with key", os.environ.get("KAGGLE_KEY", "") or "from kaggle.json",
      os.environ.get("FAKE_ECHO", ""))
if args[:2] == ["competitions", "download"]:
    folder = args[args.index("-p") + 1]
    with zipfile.ZipFile(os.path.join(folder, args[2] + ".zip"), "w") as z:
        for name, text in json.loads(os.environ.get("FAKE_ZIP", "{}")).items():
            z.writestr(name, text)
elif args[:2] == ["datasets", "status"]:
    if args[2] not in os.environ.get("FAKE_EXISTING", "").split(","):
        print("404 Client Error: Not Found")
        sys.exit(1)
    print("ready")
elif args[:2] in (["datasets", "create"], ["datasets", "version"]):
    folder = args[args.index("-p") + 1]
    with open(os.path.join(folder, "dataset-metadata.json")) as handle:
        json.load(handle)
if os.environ.get("FAKE_FAIL"):
    print("403 Forbidden for token", os.environ.get("FAKE_ECHO", ""))
    sys.exit(1)
"""

FAKE_PIP = """
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["pip", *args]) + "\\n")
if args[0] == "wheel":
    staged = args[-1]  # the copy of the sources the wheel is built from
    if not os.path.isfile(os.path.join(staged, "pyproject.toml")):
        sys.exit("no pyproject.toml in " + staged)
    if not os.path.isfile(os.path.join(staged, "src", "landmarks", "requirements.txt")):
        sys.exit("no requirements.txt in the staged package")
    folder = args[args.index("--wheel-dir") + 1]
    open(os.path.join(folder, "landmarks-0.1.0-py3-none-any.whl"), "wb").close()
elif args[0] == "download":
    folder = args[args.index("--dest") + 1]
    open(os.path.join(folder, "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl"), "wb").close()
elif args[0] == "install":
    with open(args[args.index("--constraint") + 1]) as handle:  # deleted after the call
        with open(os.environ["FAKE_LOG"], "a") as log:
            log.write(json.dumps(["constraints", handle.read()]) + "\\n")
    if os.environ.get("FAKE_FAIL"):
        print(os.environ.get("FAKE_PIP_SAYS") or "ERROR: No matching distribution found for " + args[-1])
        sys.exit(1)
"""


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Fake tools first on PATH (and as landmarks' pip), a clean HOME and no Kaggle variables;
    returns a call reader."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("kaggle", FAKE_KAGGLE), ("pip", FAKE_PIP)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}")
        path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    for key in list(os.environ):
        if key.startswith("KAGGLE_") or key.startswith("FAKE_") or key == "XDG_CONFIG_HOME":
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(kaggle_io, "pip_command", lambda: [str(bin_dir / "pip")])

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    calls.home = home
    return calls


@pytest.fixture
def kaggle_json(fakes, tmp_path, monkeypatch):
    """Credentials in $KAGGLE_CONFIG_DIR/kaggle.json, user alice."""
    config_dir = tmp_path / "kaggle-config"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "alice", "key": SECRET}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    return fakes


def _assert_secret_hidden(capsys, caplog, *texts):
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, caplog.text, *texts):
        assert SECRET not in text


# --- credentials -------------------------------------------------------------------------------


def test_no_credentials_is_a_clear_error(fakes):
    assert kaggle_io.find_credentials() is None
    with pytest.raises(LandmarksError, match="no Kaggle credentials.*kaggle.json.*KAGGLE_KEY"):
        kaggle_io.require_credentials()


@pytest.mark.parametrize(
    "setup, source, username",
    [
        ("env", "KAGGLE_USERNAME/KAGGLE_KEY", "bob"),
        ("token", "KAGGLE_API_TOKEN", None),
        ("notebook", "Kaggle notebook token", None),
        ("home_json", "kaggle.json", "carol"),
        ("access_token", "access_token", None),
    ],
)
def test_each_credentials_source_is_found_and_its_secret_kept_out_of_repr(
    fakes, tmp_path, monkeypatch, setup, source, username
):
    if setup == "env":
        monkeypatch.setenv("KAGGLE_USERNAME", "bob")
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    elif setup == "token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    elif setup == "notebook":
        token_file = tmp_path / "token"
        token_file.write_text(SECRET + "\n")
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
        monkeypatch.setenv("KAGGLE_API_V1_TOKEN", str(token_file))
    elif setup == "home_json":
        (fakes.home / ".kaggle").mkdir()
        (fakes.home / ".kaggle" / "kaggle.json").write_text(
            json.dumps({"username": "carol", "key": SECRET})
        )
    else:
        (fakes.home / ".kaggle").mkdir()
        (fakes.home / ".kaggle" / "access_token").write_text(SECRET)
    credentials = kaggle_io.find_credentials()
    assert source in credentials.source
    assert credentials.username == username
    assert SECRET in credentials.secrets
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)


def test_malformed_kaggle_json_names_the_file_but_not_its_content(kaggle_json, tmp_path):
    path = tmp_path / "kaggle-config" / "kaggle.json"
    path.write_text('{"username": "alice", "key": "' + SECRET)  # truncated JSON
    with pytest.raises(ConfigError) as error:
        kaggle_io.require_credentials()
    assert str(path) in str(error.value) and SECRET not in str(error.value)
    path.write_text(json.dumps({"username": "alice"}))
    with pytest.raises(ConfigError, match="'username' and 'key'"):
        kaggle_io.require_credentials()


def test_commands_without_credentials_fail_before_running_anything(fakes, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("x")
    (tmp_path / "sub.csv").write_text("id,landmarks\n")
    for call in (
        lambda: kaggle_io.download_competition("landmark-recognition-2021", str(tmp_path / "d")),
        lambda: kaggle_io.publish_dataset(str(tmp_path / "folder"), "my-records"),
        lambda: kaggle_io.submit("landmark-recognition-2021", kernel="alice/landmarks-infer"),
        lambda: kaggle_io.submit("titanic", str(tmp_path / "sub.csv")),
    ):
        with pytest.raises(LandmarksError, match="no Kaggle credentials"):
            call()
    assert fakes() == []


# --- download ------------------------------------------------------------------------------------


def test_download_runs_kaggle_with_an_argument_list_and_unzips(
    kaggle_json, tmp_path, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FAKE_ECHO", SECRET)
    files = {"train.csv": "id,landmark_id\nabc,1\n", "train/a/b/c/abc.jpg": "jpeg bytes"}
    monkeypatch.setenv("FAKE_ZIP", json.dumps(files))
    out = tmp_path / "data dir"  # a space: must stay one argument
    folder = kaggle_io.download_competition("landmark-recognition-2021", str(out))
    assert kaggle_json() == [
        ["kaggle", "competitions", "download", "landmark-recognition-2021", "-p", str(out)]
    ]
    assert (folder / "train.csv").read_text() == files["train.csv"]
    assert (folder / "train/a/b/c/abc.jpg").read_text() == "jpeg bytes"
    assert not list(folder.glob("*.zip")) and not list(folder.rglob("*.partial"))
    _assert_secret_hidden(capsys, caplog)


def test_zip_member_outside_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../escaped.txt", "x")
    with pytest.raises(DataError, match=r"evil.zip: member '../escaped.txt' points outside"):
        kaggle_io.extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.zip: not a valid zip"):
        kaggle_io.extract_zip(tmp_path / "broken.zip", tmp_path / "out")


def test_cli_download_defaults_to_both_competitions(kaggle_json, tmp_path, capsys):
    assert main(["kaggle", "download", "--out", str(tmp_path / "input")]) == 0
    downloads = [call[3] for call in kaggle_json() if call[1:3] == ["competitions", "download"]]
    assert downloads == ["landmark-recognition-2021", "landmark-retrieval-2021"]
    assert (tmp_path / "input" / "landmark-retrieval-2021").is_dir()


# --- publish -------------------------------------------------------------------------------------


def _records_folder(tmp_path) -> Path:
    folder = tmp_path / "tfrecords"
    folder.mkdir()
    (folder / "train-00000-of-00001.tfrec").write_bytes(b"\0" * 16)
    return folder


def test_publish_creates_a_new_dataset_with_metadata(kaggle_json, tmp_path, capsys, caplog):
    folder = _records_folder(tmp_path)
    dataset_id = kaggle_io.publish_dataset(str(folder), "gldv2-tfrecords-512", public=True)
    assert dataset_id == "alice/gldv2-tfrecords-512"
    metadata = json.loads((folder / "dataset-metadata.json").read_text())
    assert metadata == {
        "title": "Gldv2 Tfrecords 512",
        "id": "alice/gldv2-tfrecords-512",
        "licenses": [{"name": "CC0-1.0"}],
    }
    assert kaggle_json() == [
        ["kaggle", "datasets", "status", "alice/gldv2-tfrecords-512"],
        ["kaggle", "datasets", "create", "-p", str(folder), "--dir-mode", "zip", "--public"],
    ]
    _assert_secret_hidden(capsys, caplog)


def test_publish_makes_a_new_version_when_the_dataset_exists(kaggle_json, tmp_path, monkeypatch):
    folder = _records_folder(tmp_path)
    monkeypatch.setenv("FAKE_EXISTING", "team/gldv2-tfrecords-512")
    kaggle_io.publish_dataset(
        str(folder), "gldv2-tfrecords-512", owner="team", title="GLDv2 TFRecords", message="v2; 512"
    )
    assert kaggle_json()[-1] == [
        "kaggle",
        "datasets",
        "version",
        "-p",
        str(folder),
        "-m",
        "v2; 512",
        "--dir-mode",
        "zip",
    ]
    assert json.loads((folder / "dataset-metadata.json").read_text())["title"] == "GLDv2 TFRecords"


@pytest.mark.parametrize(
    "slug, title, message",
    [
        ("My_Records", None, "dataset slug 'My_Records'"),
        ("abc", None, "dataset slug 'abc'"),
        ("good-slug", "tiny", "dataset title 'tiny'"),
    ],
)
def test_publish_rejects_bad_slug_or_title(kaggle_json, tmp_path, slug, title, message):
    folder = _records_folder(tmp_path)
    with pytest.raises(ConfigError, match=message):
        kaggle_io.publish_dataset(str(folder), slug, title=title)
    assert not (folder / "dataset-metadata.json").exists()
    assert kaggle_json() == []


def test_publish_rejects_missing_or_empty_folders(kaggle_json, tmp_path):
    with pytest.raises(DataError, match="nothing to publish"):
        kaggle_io.publish_dataset(str(tmp_path / "absent"), "my-records")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        kaggle_io.publish_dataset(str(tmp_path / "empty"), "my-records")


def test_publish_needs_an_owner_when_the_credentials_have_no_user(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    with pytest.raises(ConfigError, match="--owner") as error:
        kaggle_io.publish_dataset(str(_records_folder(tmp_path)), "my-records")
    assert SECRET not in str(error.value)


def test_cli_publish_package_builds_the_wheel_and_uploads_it_alone(kaggle_json, tmp_path):
    staging = tmp_path / "package"
    staging.mkdir()
    (staging / "landmarks-0.0.9-py3-none-any.whl").write_bytes(b"old")
    status = main(
        ["kaggle", "publish", "--package", "--slug", "landmarks-package", "--staging", str(staging)]
    )
    assert status == 0
    calls = kaggle_json()
    assert calls[0][:5] == ["pip", "wheel", "--no-deps", "--wheel-dir", str(staging)]
    assert calls[-1][:3] == ["kaggle", "datasets", "create"]
    assert sorted(p.name for p in staging.iterdir()) == [
        "dataset-metadata.json",
        "landmarks-0.1.0-py3-none-any.whl",
    ]


# --- wheelhouse ----------------------------------------------------------------------------------


def _requirement_lines(path: Path) -> list[str]:
    """Requirement lines of a pip requirements file, read here without the code under test."""
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_package_wheel_is_built_from_a_copy_of_the_sources(kaggle_json, tmp_path):
    before = sorted(p.name for p in REPO.iterdir())
    egg_info_before = sorted((REPO / "src").glob("*.egg-info"))  # `pip install -e .` leaves one
    wheel = wheels.build_package_wheel(str(tmp_path / "out"))
    assert wheel.name == "landmarks-0.1.0-py3-none-any.whl"
    (call,) = kaggle_json()
    staged = Path(call[-1])
    assert staged != REPO and REPO not in staged.parents
    assert not staged.exists()  # a temporary folder, removed after the build
    assert sorted(p.name for p in REPO.iterdir()) == before
    assert sorted((REPO / "src").glob("*.egg-info")) == egg_info_before


def test_wheelhouse_downloads_binary_wheels_for_kaggle_python(kaggle_json, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned\ntensorflow==2.21.0\nnumpy==2.4.6\nFaiss_CPU==1.15.1\n")
    out = wheels.build_wheelhouse(str(tmp_path / "wheels"), str(requirements), skip=("tensorflow",))
    assert (out / "requirements.txt").read_text() == "numpy==2.4.6\nFaiss_CPU==1.15.1\n"
    download, wheel = kaggle_json()
    platforms = [download[i + 1] for i, arg in enumerate(download) if arg == "--platform"]
    # Every tag glibc 2.35 accepts, newest first: manylinux_2_35 ... manylinux_2_17, 2014.
    assert platforms == [f"manylinux_2_{m}_x86_64" for m in range(35, 16, -1)] + [
        "manylinux2014_x86_64"
    ]
    assert download[download.index("--python-version") + 1] == "3.12"
    assert download[download.index("--dest") + 1] == str(out)
    assert "--only-binary=:all:" in download
    assert download[-2:] == ["numpy==2.4.6", "Faiss_CPU==1.15.1"]
    assert wheel[:5] == ["pip", "wheel", "--no-deps", "--wheel-dir", str(out)]
    assert (out / "landmarks-0.1.0-py3-none-any.whl").exists()


def test_cli_wheelhouse_works_from_any_folder_with_the_shipped_requirements(
    kaggle_json, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no requirements.txt here
    command = ["kaggle", "wheelhouse", "--out", "w", "--skip", "tensorflow"]
    assert main([*command, "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]) == 0
    download = kaggle_json()[0]
    lines = _requirement_lines(REPO / "requirements.txt")
    expected = [line for line in lines if not line.startswith("tensorflow==")]
    assert download[-len(expected) :] == expected
    assert download[download.index("--python-version") + 1] == "3.11"
    assert download.count("--platform") == 1


def test_shipped_requirements_are_the_repository_file():
    shipped = wheels.shipped_requirements()
    assert shipped.read_bytes() == (REPO / "requirements.txt").read_bytes()
    assert shipped.parent.name == "landmarks"


def test_wheelhouse_rejects_bad_options_before_running_pip(kaggle_json, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.4.6\n")
    with pytest.raises(ConfigError, match="--skip torch: not in"):
        wheels.build_wheelhouse(str(tmp_path / "w"), str(requirements), skip=("torch",))
    with pytest.raises(DataError, match="nope.txt: requirements file not found"):
        wheels.build_wheelhouse(str(tmp_path / "w"), str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="--python-version 3.9: expected one of 3.12, 3.11"):
        wheels.build_wheelhouse(str(tmp_path / "w"), str(requirements), python_version="3.9")
    with pytest.raises(ConfigError, match="--platform"):
        wheels.build_wheelhouse(str(tmp_path / "w"), str(requirements), platforms=("a b",))
    assert kaggle_json() == []


def test_wheelhouse_is_marked_complete_only_when_every_wheel_is_there(
    kaggle_json, tmp_path, monkeypatch
):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.4.6\n")

    def failing_build(out_dir):
        raise LandmarksError("boom")

    monkeypatch.setattr(wheels, "build_package_wheel", failing_build)
    with pytest.raises(LandmarksError, match="boom"):
        wheels.build_wheelhouse(str(tmp_path / "w"), str(requirements))
    assert not (tmp_path / "w" / "requirements.txt").exists()


# --- install on a Kaggle image -------------------------------------------------------------------


def _constraints(calls) -> dict[str, str]:
    (text,) = [call[1] for call in calls if call[0] == "constraints"]
    return dict(line.split("==") for line in text.splitlines())


def test_install_adds_only_missing_requirements_and_holds_the_rest(fakes, tmp_path):
    import importlib.metadata

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==1.0.0\nPyYAML==0.1\nnot-a-real-package-xyz==1.2\n")
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    (wheelhouse / "requirements.txt").write_text("not-a-real-package-xyz==1.2\n")
    log = []
    installed = install.install_missing(str(wheelhouse), str(requirements), log=log.append)
    assert installed == ["not-a-real-package-xyz==1.2"]
    (call,) = [c for c in fakes() if c[0] == "pip"]
    assert call[1:6] == ["install", "--progress-bar", "off", "--no-index", "--find-links"]
    assert "--quiet" not in call  # pip's reasons reach the user
    assert call[6] == str(wheelhouse) and call[-1] == "not-a-real-package-xyz==1.2"
    held = _constraints(fakes())
    # The accelerator stack is held at the versions installed here, not the file's pins.
    assert held["numpy"] == importlib.metadata.version("numpy") != "1.0.0"
    assert held["tensorflow"] == importlib.metadata.version("tensorflow")
    assert held["protobuf"] == importlib.metadata.version("protobuf")
    # Other present packages may move to satisfy what is installed.
    assert "pyyaml" not in held and "h5py" not in held
    assert "not-a-real-package-xyz" not in held
    assert any("(--no-index)" in line for line in log)


@pytest.mark.parametrize("layout", ["package-only", "absent"])
def test_install_uses_the_registry_without_a_full_wheelhouse(fakes, tmp_path, layout):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("not-a-real-package-xyz==1.2\n")
    folder = tmp_path / "package"
    if layout == "package-only":  # `kaggle publish --package`: the landmarks wheel alone
        folder.mkdir()
        (folder / "landmarks-0.1.0-py3-none-any.whl").write_bytes(b"")
    install.install_missing(str(folder), str(requirements), log=lambda _: None)
    (call,) = [c for c in fakes() if c[0] == "pip"]
    assert "--no-index" not in call
    assert ("--find-links" in call) == (layout == "package-only")


def test_install_counts_another_build_of_the_same_module_as_present(fakes, tmp_path, monkeypatch):
    """Kaggle's TPU image: tensorflow-cpu, not tensorflow; its GPU image: opencv-python."""
    image = {"tensorflow-cpu": "2.20.0", "opencv-python": "4.11.0.86", "numpy": "2.0.2"}
    monkeypatch.setattr(install, "installed_version", lambda name: image.get(name))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "tensorflow==2.21.0\nopencv-python-headless==5.0.0.93\nnumpy==2.4.6\nefficientnet==1.1.1\n"
    )
    log = []
    assert install.install_missing(None, str(requirements), log=log.append) == [
        "efficientnet==1.1.1"
    ]
    assert "tensorflow-cpu 2.20.0, opencv-python 4.11.0.86, numpy 2.0.2" in log[0]
    # The accelerator stack is held where it is; OpenCV, kept, is not a constraint.
    assert _constraints(fakes()) == {"tensorflow-cpu": "2.20.0", "numpy": "2.0.2"}


# Colab's TPU runtime (googlecolab/backend-info, 2026-08): JAX, Keras, no TensorFlow.
COLAB_TPU = {
    "jax": "0.7.2",
    "jaxlib": "0.7.2",
    "libtpu": "0.0.21",
    "keras": "3.13.2",
    "protobuf": "7.35.1",
    "numpy": "2.0.2",
    "h5py": "3.16.0",
}


@pytest.mark.parametrize(
    ("backend", "environ", "expected"),
    [
        ("jax", {}, install.TENSORFLOW_ON_JAX),
        (None, {"KERAS_BACKEND": "jax"}, install.TENSORFLOW_ON_JAX),
        (None, {"ISTPUVM": "1"}, install.TENSORFLOW_ON_JAX),  # auto on a TPU VM with JAX
        ("auto", {"TPU_ACCELERATOR_TYPE": "v5litepod-1"}, install.TENSORFLOW_ON_JAX),
        ("tensorflow", {}, "tensorflow==2.21.0"),
        (None, {"KERAS_BACKEND": "tensorflow"}, "tensorflow==2.21.0"),
    ],
)
def test_missing_tensorflow_on_jax_is_the_cpu_build_within_the_held_stack(
    fakes, tmp_path, monkeypatch, backend, environ, expected
):
    monkeypatch.setattr(install, "installed_version", lambda name: COLAB_TPU.get(name))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tensorflow==2.21.0\nkeras==3.15.1\nh5py==3.14.0\nnumpy==2.4.6\n")
    log = []
    installed = install.install_missing(None, str(requirements), log=log.append, backend=backend)
    assert installed == [expected]
    (call,) = [c for c in fakes() if c[0] == "pip"]
    assert call[-1] == expected
    held = _constraints(fakes())
    assert held == {k: v for k, v in COLAB_TPU.items() if k != "h5py"}  # h5py may move
    assert ("tensorflow-cpu" in " ".join(log)) == (expected == install.TENSORFLOW_ON_JAX)


def test_install_with_nothing_missing_runs_no_pip(fakes, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==9.9\n")
    assert install.install_missing(None, str(requirements), log=print) == []
    assert fakes() == []


def test_failed_install_names_the_packages_and_the_source(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("not-a-real-package-xyz==1.2\n")
    with pytest.raises(LandmarksError, match="not-a-real-package-xyz==1.2 from the registry"):
        install.install_missing(None, str(requirements), log=lambda _: None)


PIP_CONFLICT = """\
Collecting tensorflow==2.21.0
INFO: pip is looking at multiple versions of tensorflow to determine which version is compatible.
ERROR: Cannot install tensorflow==2.21.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    tensorflow 2.21.0 depends on h5py<3.15.0 and >=3.11.0
    The user requested (constraint) h5py==3.16.0

Additionally, some packages in these conflicts have no matching distributions available.

To fix this you could try to:
1. loosen the range of package versions you've specified
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""


def test_failed_install_quotes_pips_reason(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    monkeypatch.setenv("FAKE_PIP_SAYS", PIP_CONFLICT)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("not-a-real-package-xyz==1.2\n")
    with pytest.raises(LandmarksError) as failure:
        install.install_missing(None, str(requirements), log=lambda _: None)
    message = str(failure.value)
    assert "tensorflow 2.21.0 depends on h5py<3.15.0 and >=3.11.0" in message
    assert "The user requested (constraint) h5py==3.16.0" in message
    assert "ERROR: ResolutionImpossible" in message
    assert "To fix this" not in message and "Collecting" not in message


def test_pip_reason_falls_back_to_the_last_lines():
    output = "".join(f"line {i}\n" for i in range(20))
    assert install.pip_reason(output, tail=3) == ["line 17", "line 18", "line 19"]


# --- submit --------------------------------------------------------------------------------------


def test_submit_passes_the_message_as_one_argument(kaggle_json, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,landmarks\n")
    kaggle_io.submit("titanic", str(submission), "try 1; rm -rf / $(whoami)")
    assert kaggle_json() == [
        [
            "kaggle",
            "competitions",
            "submit",
            "titanic",
            "-f",
            str(submission),
            "-m",
            "try 1; rm -rf / $(whoami)",
        ]
    ]


def test_a_notebook_version_is_submitted_to_a_code_competition(kaggle_json, capsys):
    command = ["kaggle", "submit", "--competition", "landmark-retrieval-2021"]
    assert main([*command, "--kernel", "alice/landmarks-infer", "--version", "3"]) == 0
    assert kaggle_json() == [
        [
            "kaggle",
            "competitions",
            "submit",
            "landmark-retrieval-2021",
            "-k",
            "alice/landmarks-infer",
            "-f",
            "submission.csv",
            "-m",
            "landmarks submission",
            "-v",
            "3",
        ]
    ]
    assert "reruns it on the hidden test set" in capsys.readouterr().out


def test_a_file_is_refused_by_a_code_competition_before_kaggle_runs(kaggle_json, tmp_path, capsys):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,landmarks\n")
    assert main(["kaggle", "submit", "--file", str(submission)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: landmark-recognition-2021 is a code competition")
    assert "--kernel OWNER/SLUG --version N" in error
    for kernel, version, message in [
        ("landmarks-infer", None, "expected OWNER/NOTEBOOK-SLUG"),
        ("alice/landmarks-infer", 0, "versions start at 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            kaggle_io.submit("landmark-recognition-2021", kernel=kernel, version=version)
    assert kaggle_json() == []


def test_failed_kaggle_call_reports_its_output_without_the_secret(
    kaggle_json, tmp_path, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FAKE_FAIL", "1")
    monkeypatch.setenv("FAKE_ECHO", SECRET)
    with pytest.raises(LandmarksError, match="kaggle competitions submit failed") as error:
        kaggle_io.submit("landmark-recognition-2021", kernel="alice/landmarks-infer")
    assert "403 Forbidden for token ***" in str(error.value)
    _assert_secret_hidden(capsys, caplog, str(error.value))


def test_cli_reports_bad_input_in_one_line(kaggle_json, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    monkeypatch.setenv("FAKE_ECHO", SECRET)
    missing = tmp_path / "missing.csv"
    assert main(["kaggle", "submit", "--competition", "titanic", "--file", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: submission file not found\n"
    missing.write_text("id,landmarks\n")
    assert main(["kaggle", "submit", "--competition", "titanic", "--file", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: kaggle competitions submit failed")
    assert SECRET not in captured.out + captured.err
