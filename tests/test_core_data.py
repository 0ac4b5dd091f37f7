"""Real data: downloads against a loopback server (every way a server fails), the data root and its
overrides, the state and verification of sources, and the `xbench data` commands. No test here
touches the internet: every URL is 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from loopback import Loopback, Route
from xbench import DataSource, RemoteFile, hookimpl, sources
from xbench.cli import main
from xbench.download import DownloadError, Policy, download, fetch
from xbench.errors import UsageError
from xbench.registry import load_registry

BODY = bytes(range(256)) * 4096  # 1 MiB
MD5 = "md5:" + hashlib.md5(BODY).hexdigest()
FAST = Policy(retries=3, backoff=0.01, timeout=0.5)


@pytest.fixture
def server():
    with Loopback() as s:
        yield s


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("XBENCH_DATA", str(root))
    for name in ("XBENCH_DATA_MIRROR", "XBENCH_DATA_SOURCES"):
        monkeypatch.delenv(name, raising=False)
    return root


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- download


def test_good_file_is_downloaded_verified_and_stamped(server, tmp_path):
    server.routes["/good.bin"] = Route(BODY)
    seen = []
    dest = download(server.url("/good.bin"), tmp_path / "out" / "good.bin", MD5, policy=FAST,
                    progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == BODY
    assert _leftovers(dest.parent) == ["good.bin"]
    assert seen[-1] == (len(BODY), len(BODY)) and len(seen) > 2
    assert sources.Stamps().get(dest, "md5") == MD5[4:]


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    server.routes["/wrong.bin"] = Route(BODY[::-1])
    with pytest.raises(DownloadError, match=r"has md5 [0-9a-f]{32}, but the published checksum is md5:.*deleted"):
        download(server.url("/wrong.bin"), tmp_path / "out" / "wrong.bin", MD5, policy=FAST)
    assert _leftovers(tmp_path / "out") == []


def test_truncated_file_fails_its_checksum_and_leaves_nothing(server, tmp_path):
    server.routes["/short.bin"] = Route(BODY[: len(BODY) // 3])  # the server holds a truncated file
    with pytest.raises(DownloadError, match=r"\(349525 bytes\).*published checksum"):
        download(server.url("/short.bin"), tmp_path / "out" / "short.bin", MD5, policy=FAST)
    assert _leftovers(tmp_path / "out") == []


def test_connection_dropped_every_time_keeps_only_the_partial_file(server, tmp_path):
    server.routes["/cut.bin"] = Route(BODY, drop_after=[1000] * 10, ranges=False)
    with pytest.raises(DownloadError, match=r"failed after 4 attempts: the connection (closed after 1000 of "
                                            r"1048576 bytes|broke).*kept in .*cut\.bin\.part.*resumes"):
        download(server.url("/cut.bin"), tmp_path / "out" / "cut.bin", MD5, policy=FAST, sleep=lambda s: None)
    assert _leftovers(tmp_path / "out") == ["cut.bin.part"]  # never under the final name


def test_404_is_not_retried_and_says_what_to_do(server, tmp_path):
    with pytest.raises(DownloadError, match=r"answered 404 .*homepage.*XBENCH_DATA_MIRROR"):
        download(server.url("/nothing.bin"), tmp_path / "out" / "x.bin", MD5, policy=FAST)
    assert [p for p, _ in server.requests] == ["/nothing.bin"]
    assert _leftovers(tmp_path / "out") == []


def test_server_errors_are_retried_with_backoff(server, tmp_path):
    server.routes["/busy.bin"] = Route(BODY, status=[503, 429])
    waits = []
    dest = download(server.url("/busy.bin"), tmp_path / "busy.bin", MD5, policy=Policy(retries=3, backoff=0.5),
                    sleep=waits.append)
    assert dest.read_bytes() == BODY and waits == [0.5, 1.0]


def test_stalled_connection_times_out_and_resumes_where_it_stopped(server, tmp_path):
    server.routes["/stall.bin"] = Route(BODY, stall_after=[300_000], stall_seconds=5)
    dest = download(server.url("/stall.bin"), tmp_path / "stall.bin", MD5, policy=FAST, sleep=lambda s: None)
    assert dest.read_bytes() == BODY
    assert [r for _, r in server.requests] == [None, "bytes=300000-"]


def test_stalled_for_good_is_a_clear_error(server, tmp_path):
    server.routes["/dead.bin"] = Route(BODY, stall_after=[0] * 10, stall_seconds=5)
    with pytest.raises(DownloadError, match=r"no data for 0\.5 s"):
        download(server.url("/dead.bin"), tmp_path / "out" / "dead.bin", MD5,
                 policy=Policy(retries=1, backoff=0.01, timeout=0.5))
    assert not (tmp_path / "out" / "dead.bin").exists()


def test_interrupted_download_resumes_from_the_partial_file(server, tmp_path):
    """A first fetch died (Ctrl-C, a crash) with part of the file on disk; the next one asks only for the rest."""
    server.routes["/big.bin"] = Route(BODY)
    dest = tmp_path / "dl" / "big.bin"
    dest.parent.mkdir()
    Path(str(dest) + ".part").write_bytes(BODY[:123_456])
    download(server.url("/big.bin"), dest, MD5, policy=FAST)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/big.bin", "bytes=123456-")]
    assert _leftovers(dest.parent) == ["big.bin"]


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.routes["/flaky.bin"] = Route(BODY, drop_after=[400_000, 300_000])
    dest = download(server.url("/flaky.bin"), tmp_path / "flaky.bin", MD5, policy=FAST, sleep=lambda s: None)
    assert dest.read_bytes() == BODY
    assert [r for _, r in server.requests] == [None, "bytes=400000-", "bytes=700000-"]


def test_server_that_ignores_range_sends_everything_again(server, tmp_path):
    server.routes["/plain.bin"] = Route(BODY, ranges=False)
    dest = tmp_path / "plain.bin"
    Path(str(dest) + ".part").write_bytes(b"x" * 5000)  # even a wrong partial file is replaced
    download(server.url("/plain.bin"), dest, MD5, policy=FAST)
    assert dest.read_bytes() == BODY


def test_partial_file_longer_than_the_file_is_discarded(server, tmp_path):
    server.routes["/g.bin"] = Route(BODY)
    dest = tmp_path / "out" / "g.bin"
    dest.parent.mkdir()
    Path(str(dest) + ".part").write_bytes(BODY + b"junk")
    with pytest.raises(DownloadError, match="published checksum"):
        download(server.url("/g.bin"), dest, MD5, policy=FAST)
    assert _leftovers(dest.parent) == []
    download(server.url("/g.bin"), dest, MD5, policy=FAST)  # and the next fetch starts clean
    assert dest.read_bytes() == BODY


def test_only_http_urls_and_valid_checksums(tmp_path):
    with pytest.raises(DownloadError, match="only http and https"):
        download("file:///etc/passwd", tmp_path / "x", MD5)
    with pytest.raises(ValueError, match="md5:<32 hex digits>"):
        download("http://127.0.0.1:9/x", tmp_path / "x", "md5:abc")


# ----------------------------------------------------------------------------- sources, state, overrides


def _source(server, **kw) -> DataSource:
    files = kw.pop("files", (RemoteFile("good.bin", server.url("/good.bin"), MD5, len(BODY)),))
    return DataSource(name="acme:good", description="a test file", licence="CC0", folder="acme", files=files, **kw)


def test_fetch_places_file_under_the_data_root_and_state_follows(server, data_root):
    server.routes["/good.bin"] = Route(BODY)
    src = _source(server)
    assert sources.inspect(src).state == "missing"
    state = fetch(src, policy=FAST)
    assert state.state == "verified" and (data_root / "acme" / "good.bin").read_bytes() == BODY
    fetch(src, policy=FAST)  # already here: no second request
    assert len(server.requests) == 1
    # damage it: list (no hashing) sees an unchanged stamp only if size and time match, verify re-hashes
    path = data_root / "acme" / "good.bin"
    path.write_bytes(BODY[:-1] + b"\x00")
    assert sources.inspect(src).state == "present"
    bad = sources.inspect(src, hash_files=True)
    assert bad.state == "corrupt" and "published checksum is " + MD5 in bad.problems[0]
    assert sources.inspect(src).state == "corrupt"  # the stamp remembers what verify found
    assert fetch(src, policy=FAST).state == "verified" and path.read_bytes() == BODY


def test_per_dataset_variable_overrides_the_data_root(server, tmp_path, monkeypatch):
    src = _source(server, env="ACME_DIR")
    monkeypatch.setenv("ACME_DIR", str(tmp_path / "mine"))
    assert sources.file_path(src) == tmp_path / "mine" / "good.bin"
    monkeypatch.delenv("ACME_DIR")
    assert sources.file_path(src) == Path(os.environ["XBENCH_DATA"]) / "acme" / "good.bin"


def test_default_data_root_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert sources.data_root() == tmp_path / "cache" / "xbench" / "data"


def test_mirror_and_catalogue(server, tmp_path, monkeypatch, data_root):
    server.routes["/acme/good.bin"] = Route(BODY)
    monkeypatch.setenv("XBENCH_DATA_MIRROR", server.base + "/")
    src = DataSource(name="acme:good", description="d", licence="CC0", folder="acme",
                     files=(RemoteFile("good.bin", "https://unreachable.invalid/good.bin", MD5),))
    assert fetch(src, policy=FAST).state == "verified"
    assert server.requests[-1][0] == "/acme/good.bin"
    monkeypatch.delenv("XBENCH_DATA_MIRROR")
    other = BODY[::-1]
    server.routes["/private.bin"] = Route(other)
    catalogue = tmp_path / "sources.toml"
    catalogue.write_text(f'["acme:good"]\nurl = "{server.url("/private.bin")}"\n'
                         f'checksum = "sha256:{hashlib.sha256(other).hexdigest()}"\n')
    monkeypatch.setenv("XBENCH_DATA_SOURCES", str(catalogue))
    state = fetch(src, policy=FAST)  # the file here no longer matches: fetched again from the catalogue's url
    assert state.state == "verified" and (data_root / "acme" / "good.bin").read_bytes() == other
    record = sources.provenance("real", source=src, files=[data_root / "acme" / "good.bin"])
    assert record["verified"] is True and "XBENCH_DATA_SOURCES" in record["note"]
    catalogue.write_text('["acme:good"]\nchecksum = "md5:nothex"\n')
    with pytest.raises(ValueError, match="md5:<32 hex digits>"):
        sources.effective(src)
    catalogue.write_text('["acme:good"]\nurl = 3\nsha = "x"\n')
    with pytest.raises(UsageError, match="XBENCH_DATA_SOURCES.*url, checksum and size"):
        sources.effective(src)


def test_select_by_name_prefix_and_glob():
    known = {n: DataSource(name=n, description="", licence="") for n in
             ("medmnist:breastmnist:28", "medmnist:breastmnist:64", "medmnist:bloodmnist:28", "hcp")}
    assert [s.name for s in sources.select(known, ["medmnist:breastmnist"])] == [
        "medmnist:breastmnist:28", "medmnist:breastmnist:64"]
    assert [s.name for s in sources.select(known, ["*:28"])] == ["medmnist:bloodmnist:28", "medmnist:breastmnist:28"]
    with pytest.raises(UsageError, match='did you mean "medmnist:breastmnist"'):
        sources.select(known, ["medmnist:breastmnst"])


def test_terms_source_is_checked_by_its_layout(tmp_path, monkeypatch):
    src = DataSource(name="acme:terms", description="behind terms", licence="terms", kind="terms",
                     folder="terms", steps="1. sign the terms\n2. copy the files",
                     layout=lambda folder: None if (folder / "ok.txt").is_file() else "ok.txt is missing")
    assert sources.inspect(src).state == "missing"
    (Path(os.environ["XBENCH_DATA"]) / "terms").mkdir(parents=True)
    state = sources.inspect(src)
    assert state.state == "corrupt" and state.problems == ["ok.txt is missing"]
    (Path(os.environ["XBENCH_DATA"]) / "terms" / "ok.txt").write_text("x")
    assert sources.inspect(src).state == "verified"
    with pytest.raises(DownloadError, match="cannot be downloaded by xbench. 1. sign the terms"):
        fetch(src)


def test_registry_rejects_bad_source_names():
    class Plugin:
        @staticmethod
        @hookimpl
        def xbench_data_sources():
            yield DataSource(name="Bad Name", description="", licence="")

    registry = load_registry(extra=[("badsrc", Plugin)])
    assert any("invalid name 'Bad Name'" in e for p in registry.problems for e in p.errors)


# ----------------------------------------------------------------------------- the commands


class _Acme:
    """A plugin declaring sources served by the loopback server (set ``base`` first)."""

    base = ""

    @staticmethod
    @hookimpl
    def xbench_data_sources():
        yield DataSource(name="acme:good", description="a good file", licence="CC0", folder="acme",
                         files=(RemoteFile("good.bin", _Acme.base + "/good.bin", MD5, len(BODY)),))
        yield DataSource(name="acme:gone", description="a file that is gone", licence="CC0", folder="acme",
                         files=(RemoteFile("gone.bin", _Acme.base + "/gone.bin", MD5, len(BODY)),))
        yield DataSource(name="acme:terms", description="behind terms", licence="research only", kind="terms",
                         folder="terms", steps="1. Register at https://example.org\n2. Copy the files there.",
                         layout=lambda f: None if (f / "ok.txt").is_file() else "ok.txt is missing")


@pytest.fixture
def cli(server, monkeypatch):
    import xbench.cli as cli_module

    _Acme.base = server.base
    server.routes["/good.bin"] = Route(BODY)
    monkeypatch.setattr(cli_module, "_registry", lambda: load_registry(extra=[("acme-sources", _Acme)]))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, ["data", *args], catch_exceptions=False)


def test_data_commands_end_to_end(cli, data_root):
    listed = cli("list", "acme", "--json")
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.output)}
    assert rows["acme:good"]["state"] == "missing" and rows["acme:good"]["size"] == len(BODY)
    assert rows["acme:terms"]["get"].startswith("terms of access")

    fetched = cli("fetch", "acme:good", "--timeout", "2")
    assert fetched.exit_code == 0, fetched.output
    assert "acme:good: verified" in fetched.output
    assert cli("path", "acme:good").output.strip() == str(data_root / "acme" / "good.bin")
    assert cli("verify").exit_code == 0

    (data_root / "acme" / "good.bin").write_bytes(b"not the file")
    bad = cli("verify", "acme:good")
    assert bad.exit_code == 1
    assert "corrupt" in bad.output and "published checksum is " + MD5 in bad.output.replace("\n", " ")
    assert "xbench data fetch acme:good" in bad.output

    gone = cli("fetch", "acme:gone", "--retries", "0")
    assert gone.exit_code == 1 and "404" in gone.output

    terms = cli("fetch", "acme:terms")
    assert terms.exit_code == 1 and "1. Register at https://example.org" in terms.output
    (data_root / "terms").mkdir()
    (data_root / "terms" / "ok.txt").write_text("x")
    assert cli("fetch", "acme:terms").exit_code == 0
    assert cli("verify", "acme:terms").exit_code == 0

    unknown = cli("fetch", "acme:god")
    assert unknown.exit_code == 2 and 'did you mean "acme:good"' in unknown.output


def test_builtin_sources_are_listed_with_their_records():
    registry = load_registry()
    names = set(registry.names("data_sources"))
    assert {"medmnist:breastmnist:64", "medmnist:dermamnist:224"} <= names
    breast = registry.get("data_sources", "medmnist:breastmnist:28").spec
    assert breast.files[0].checksum == "md5:750601b1f35ba3300ea97c75c52ff8f6"  # medmnist.INFO's
    assert breast.files[0].url.startswith("https://zenodo.org/records/")
    assert registry.get("data_sources", "medmnist:dermamnist:64").spec.licence == "CC BY-NC 4.0"
    from torchvision.models import VGG16_Weights

    vgg = registry.get("data_sources", "torchvision:vgg16-imagenet").spec
    assert vgg.files[0].url == VGG16_Weights.IMAGENET1K_V1.url and vgg.files[0].name == "vgg16-397923af.pth"
    assert vgg.files[0].checksum == "sha256:397923af" and vgg.folder == "weights"
    kinds = {n: registry.get("data_sources", n).spec.kind for n in ("hcp", "imagenet-hvz", "ixi:t1", "sample-t1")}
    assert kinds == {"hcp": "terms", "imagenet-hvz": "terms", "ixi:t1": "download", "sample-t1": "package"}
    for name in ("hcp", "imagenet-hvz"):  # behind terms: exact steps, never a download
        spec = registry.get("data_sources", name).spec
        assert not spec.fetchable and "1. " in spec.steps and "xbench data verify" in spec.steps
