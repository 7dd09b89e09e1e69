"""The prepare stage against the embedded S3 server: tiles, manifest, idempotence, resume, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from components.core import uri as uri_io
from components.core.manifest import load_manifest
from components.core.s3 import s3_client
from components.prepare.__main__ import main as prepare_main
from tests.fault_scenario import kill, wait_for
from tests.rasters import ORIGIN, random_pixels, write_geotiff

REPO = Path(__file__).resolve().parents[1]


def run_prepare(raster: str, tiles: str, manifest: str, *overrides: str) -> int:
    argv = ["--raster", raster, "--tiles", tiles, "--manifest", manifest]
    for override in overrides:
        argv += ["--set", override]
    return prepare_main(argv)


@pytest.fixture()
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", random_pixels(3, 600, 700))


def tile_objects(prefix: str) -> dict[str, str]:
    return {uri_io.basename(o.uri): o.etag for o in uri_io.list_objects(prefix)}


def test_tiles_and_manifest_on_s3_match_the_raster(
    scene: Path, bucket: str, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "manifest.json"
    assert run_prepare(str(scene), f"s3://{bucket}/tiles", str(manifest_path)) == 0
    manifest = load_manifest(str(manifest_path))
    assert manifest.crs == "EPSG:2056" and manifest.pixel_size_m == 0.1
    assert len(manifest.tiles) == 9  # 3 columns x 3 rows, edge tiles padded
    assert {t.key for t in manifest.tiles} == set(tile_objects(f"s3://{bucket}/tiles"))
    pixels = random_pixels(3, 600, 700)
    for tile in manifest.tiles:
        png = uri_io.read_bytes(tile.uri)
        assert hashlib.sha256(png).hexdigest() == tile.sha256 and len(png) == tile.bytes
        rgb = np.asarray(Image.open(io.BytesIO(png)))
        assert rgb.shape == (256, 256, 3)
        w = tile.window
        inside = pixels[:, w.row_off : w.row_off + 256, w.col_off : w.col_off + 256].transpose(
            1, 2, 0
        )
        assert np.array_equal(rgb[: inside.shape[0], : inside.shape[1]], inside)
        assert not rgb[inside.shape[0] :, :].any()  # padding is zero
        assert tile.transform[2] == pytest.approx(ORIGIN[0] + 0.1 * w.col_off)
        assert tile.transform[5] == pytest.approx(ORIGIN[1] - 0.1 * w.row_off)
        assert tile.key == f"scene_{w.col_off}_{w.row_off}.png"


def test_raster_on_s3_gives_the_same_tiles_as_local(
    scene: Path, bucket: str, tmp_path: Path
) -> None:
    uri_io.upload_file(scene, f"s3://{bucket}/in/scene.tif")
    assert run_prepare(str(scene), str(tmp_path / "local_tiles"), str(tmp_path / "a.json")) == 0
    assert (
        run_prepare(f"s3://{bucket}/in/scene.tif", f"s3://{bucket}/t", str(tmp_path / "b.json"))
        == 0
    )
    local = load_manifest(str(tmp_path / "a.json"))
    remote = load_manifest(str(tmp_path / "b.json"))
    assert [t.sha256 for t in local.tiles] == [t.sha256 for t in remote.tiles]


def test_rerun_uploads_nothing_and_manifest_bytes_are_stable(
    scene: Path, bucket: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"s3://{bucket}/tiles"
    assert run_prepare(str(scene), prefix, str(tmp_path / "m1.json")) == 0
    stamps = {
        o["Key"]: o["LastModified"]
        for o in s3_client().list_objects_v2(Bucket=bucket, Prefix="tiles/")["Contents"]
    }
    capsys.readouterr()
    writes: list[str] = []
    write_bytes = uri_io.write_bytes
    monkeypatch.setattr(
        uri_io, "write_bytes", lambda uri, *a, **k: (writes.append(uri), write_bytes(uri, *a, **k))
    )
    assert run_prepare(str(scene), prefix, str(tmp_path / "m2.json")) == 0
    assert "0 tiles uploaded, 9 unchanged" in capsys.readouterr().out
    assert not [uri for uri in writes if uri.startswith(prefix)], "a tile was written again"
    again = {
        o["Key"]: o["LastModified"]
        for o in s3_client().list_objects_v2(Bucket=bucket, Prefix="tiles/")["Contents"]
    }
    assert again == stamps
    assert (tmp_path / "m1.json").read_bytes() == (tmp_path / "m2.json").read_bytes()


def test_changed_or_missing_tiles_are_uploaded_again(
    scene: Path, bucket: str, tmp_path: Path, capsys
) -> None:
    prefix = f"s3://{bucket}/tiles"
    assert run_prepare(str(scene), prefix, str(tmp_path / "m.json")) == 0
    uri_io.write_bytes(f"{prefix}/scene_256_256.png", b"corrupted")
    uri_io.delete(f"{prefix}/scene_0_0.png")
    capsys.readouterr()
    assert run_prepare(str(scene), prefix, str(tmp_path / "m.json")) == 0
    assert "2 tiles uploaded, 7 unchanged" in capsys.readouterr().out
    manifest = load_manifest(str(tmp_path / "m.json"))
    by_key = {t.key: t for t in manifest.tiles}
    assert hashlib.sha256(uri_io.read_bytes(f"{prefix}/scene_256_256.png")).hexdigest() == (
        by_key["scene_256_256.png"].sha256
    )


def test_killed_run_then_rerun_ends_with_the_complete_set(bucket: str, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "big.tif", random_pixels(3, 1536, 1536, seed=3))
    prefix = f"s3://{bucket}/tiles"
    manifest = tmp_path / "manifest.json"
    marker = tmp_path / "paused"
    # one worker: tiles are written in this process, where the hook stops the 41st upload
    pause = ["-m", "tests.pause_hook", str(marker), "components.core.uri:write_bytes", "/tiles/"]
    command = [
        sys.executable,
        "-m",
        "components.prepare",
        "--raster",
        str(raster),
        "--tiles",
        prefix,
        "--manifest",
        str(manifest),
        "--set",
        "prepare.tile_size=64",
        "--set",
        "prepare.workers=1",
    ]
    process = subprocess.Popen(
        [sys.executable, *pause, "41", *command[1:]],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker.exists, process, "the 41st tile upload")
    kill(process)
    partial = len(tile_objects(prefix))
    # uploads 1-40 went or were going (in the other upload threads) when the process died
    assert 0 < partial <= 40 and not manifest.exists()
    subprocess.run(command, cwd=REPO, env=os.environ.copy(), check=True, capture_output=True)
    resumed = load_manifest(str(manifest))
    assert len(resumed.tiles) == 576 and set(tile_objects(prefix)) == {t.key for t in resumed.tiles}
    fresh_manifest = tmp_path / "fresh.json"
    assert (
        run_prepare(
            str(raster), f"s3://{bucket}/fresh", str(fresh_manifest), "prepare.tile_size=64"
        )
        == 0
    )
    fresh = json.loads(fresh_manifest.read_text())
    assert [t["sha256"] for t in fresh["tiles"]] == [t.sha256 for t in resumed.tiles]


def test_drop_edge_tiles_and_overlap(scene: Path, tmp_path: Path) -> None:
    assert (
        run_prepare(
            str(scene),
            str(tmp_path / "t"),
            str(tmp_path / "m.json"),
            "prepare.edge=drop",
            "prepare.overlap=56",
        )
        == 0
    )
    windows = [
        (t.window.col_off, t.window.row_off) for t in load_manifest(str(tmp_path / "m.json")).tiles
    ]
    assert windows == [(c, r) for r in (0, 200) for c in (0, 200, 400)]


def test_all_nodata_tiles_are_skipped(tmp_path: Path) -> None:
    pixels = random_pixels(3, 512, 512)
    pixels[:, :256, 256:] = 0
    raster = write_geotiff(tmp_path / "holes.tif", pixels, nodata=0)
    assert run_prepare(str(raster), str(tmp_path / "t"), str(tmp_path / "m.json")) == 0
    keys = {t.key for t in load_manifest(str(tmp_path / "m.json")).tiles}
    assert keys == {"holes_0_0.png", "holes_0_256.png", "holes_256_256.png"}
    assert (
        run_prepare(
            str(raster),
            str(tmp_path / "t2"),
            str(tmp_path / "m2.json"),
            "prepare.skip_nodata=false",
        )
        == 0
    )
    assert len(load_manifest(str(tmp_path / "m2.json")).tiles) == 4


def write_boundary(
    path: Path, x0: float, y0: float, x1: float, y1: float, crs: str = "EPSG:2056"
) -> Path:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": crs}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "commune"},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    return path


def test_area_of_interest_keeps_only_the_tiles_it_touches(
    scene: Path, bucket: str, tmp_path: Path
) -> None:
    x0, y0 = ORIGIN
    # 10 m x 10 m square starting 30 m east, 30 m south: pixels 300..400 → tile columns/rows 256.
    boundary = write_boundary(tmp_path / "aoi.geojson", x0 + 30, y0 - 40, x0 + 40, y0 - 30)
    uri_io.upload_file(boundary, f"s3://{bucket}/aoi.geojson")
    assert (
        run_prepare(
            str(scene),
            str(tmp_path / "t"),
            str(tmp_path / "m.json"),
            f"prepare.aoi=s3://{bucket}/aoi.geojson",
        )
        == 0
    )
    assert [t.key for t in load_manifest(str(tmp_path / "m.json")).tiles] == ["scene_256_256.png"]


def test_area_of_interest_in_a_geopackage_in_another_crs(scene: Path, tmp_path: Path) -> None:
    import pyogrio
    import shapely
    from rasterio.warp import transform_geom

    x0, y0 = ORIGIN
    square = shapely.box(x0 + 1, y0 - 10, x0 + 10, y0 - 1)
    wgs84 = transform_geom("EPSG:2056", "EPSG:4326", shapely.geometry.mapping(square))
    gpkg = tmp_path / "aoi.gpkg"
    pyogrio.raw.write(
        str(gpkg),
        geometry=np.array([shapely.to_wkb(shapely.geometry.shape(wgs84))], dtype=object),
        field_data=[],
        fields=[],
        crs="EPSG:4326",
        geometry_type="Polygon",
        driver="GPKG",
    )
    assert (
        run_prepare(
            str(scene), str(tmp_path / "t"), str(tmp_path / "m.json"), f"prepare.aoi={gpkg}"
        )
        == 0
    )
    assert [t.key for t in load_manifest(str(tmp_path / "m.json")).tiles] == ["scene_0_0.png"]


def test_area_of_interest_outside_the_raster_fails(scene: Path, tmp_path: Path, capsys) -> None:
    boundary = write_boundary(tmp_path / "far.geojson", 2_700_000, 1_100_000, 2_700_100, 1_100_100)
    assert (
        run_prepare(
            str(scene), str(tmp_path / "t"), str(tmp_path / "m.json"), f"prepare.aoi={boundary}"
        )
        == 1
    )
    assert "does not overlap the raster" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "t").exists()


def read_first_tile(manifest: Path) -> np.ndarray:
    tile = load_manifest(str(manifest)).tiles[0]
    return np.asarray(Image.open(io.BytesIO(uri_io.read_bytes(tile.uri))))


def test_one_band_becomes_grey_rgb(tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "grey.tif", random_pixels(1, 256, 256))
    assert run_prepare(str(raster), str(tmp_path / "t"), str(tmp_path / "m.json")) == 0
    rgb = read_first_tile(tmp_path / "m.json")
    assert np.array_equal(rgb[..., 0], random_pixels(1, 256, 256)[0])
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_four_bands_give_rgb_from_the_first_three(tmp_path: Path) -> None:
    pixels = random_pixels(4, 256, 256)
    pixels[3] = 255
    raster = write_geotiff(tmp_path / "rgbn.tif", pixels)
    assert run_prepare(str(raster), str(tmp_path / "t"), str(tmp_path / "m.json")) == 0
    assert np.array_equal(read_first_tile(tmp_path / "m.json"), pixels[:3].transpose(1, 2, 0))


def test_uint16_is_scaled_by_the_documented_rule(tmp_path: Path) -> None:
    pixels = random_pixels(3, 256, 256, dtype="uint16") % 4096
    raster = write_geotiff(tmp_path / "deep.tif", pixels.astype("uint16"))
    assert (
        run_prepare(
            str(raster), str(tmp_path / "t"), str(tmp_path / "m.json"), "prepare.uint16_max=4095"
        )
        == 0
    )
    expected = np.clip(np.rint(pixels.astype(np.float32) * (255 / 4095)), 0, 255).astype(np.uint8)
    assert np.array_equal(read_first_tile(tmp_path / "m.json"), expected.transpose(1, 2, 0))


@pytest.mark.parametrize(
    ("make_raster", "message"),
    [
        (lambda p: write_geotiff(p, random_pixels(3, 256, 256), crs=None), "has no CRS"),
        (lambda p: write_geotiff(p, random_pixels(3, 256, 256).astype("float32")), "float32"),
        (lambda p: write_geotiff(p, random_pixels(2, 256, 256)), "2 bands"),
        (lambda p: (p.write_text("not a raster"), p)[1], "not a raster GDAL can read"),
        (
            lambda p: write_geotiff(p, random_pixels(3, 256, 256), geotransform=False),
            "no geotransform, so its pixel size is unknown",
        ),
    ],
)
def test_unusable_rasters_fail_with_one_line(
    make_raster, message: str, tmp_path: Path, capsys
) -> None:
    raster = make_raster(tmp_path / "bad.tif")
    assert run_prepare(str(raster), str(tmp_path / "t"), str(tmp_path / "m.json")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "t").exists()


def test_geographic_raster_records_its_pixel_size_in_metres_and_warns_of_stretch(
    tmp_path: Path, capsys
) -> None:
    raster = tmp_path / "wgs84.tif"
    with rasterio.open(
        raster, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
        crs="EPSG:4326", transform=Affine(1e-6, 0, 7.44, 0, -1e-6, 47.0),
    ) as dataset:  # fmt: skip
        dataset.write(random_pixels(3, 256, 256))

    assert run_prepare(str(raster), str(tmp_path / "t"), str(tmp_path / "m.json")) == 0

    manifest = load_manifest(str(tmp_path / "m.json"))
    assert manifest.pixel_size_m == pytest.approx((0.0760 * 0.1112) ** 0.5, rel=1e-3)
    assert "pixels of 0.0761 x 0.111 m (geographic CRS, at its centre) on the ground" in (
        capsys.readouterr().err
    )


def test_missing_raster_on_s3_names_it(bucket: str, tmp_path: Path, capsys) -> None:
    assert run_prepare(f"s3://{bucket}/nope.tif", f"s3://{bucket}/t", str(tmp_path / "m.json")) == 1
    assert f"raster does not exist: s3://{bucket}/nope.tif" in capsys.readouterr().err


def test_tile_size_larger_than_the_raster_is_a_usage_error(
    scene: Path, tmp_path: Path, capsys
) -> None:
    assert (
        run_prepare(
            str(scene), str(tmp_path / "t"), str(tmp_path / "m.json"), "prepare.tile_size=1024"
        )
        == 2
    )
    assert "prepare.tile_size=1024 is larger than the raster" in capsys.readouterr().err


def test_missing_bucket_fails_before_writing(
    scene: Path, s3_server, tmp_path: Path, capsys
) -> None:
    assert run_prepare(str(scene), "s3://no-such-bucket-abc/t", str(tmp_path / "m.json")) == 1
    assert "bucket does not exist: s3://no-such-bucket-abc/t" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_unreachable_endpoint_fails_in_one_line(
    scene: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from components.s3server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")  # set here: alone, no fixture set them
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("SOLARPIPE_S3_MAX_ATTEMPTS", "2")
    assert run_prepare(str(scene), "s3://bucket/t", str(tmp_path / "m.json")) == 1
    assert "cannot reach the S3 endpoint" in capsys.readouterr().err


@pytest.fixture()
def authenticating_s3(tmp_path: Path):
    """A second moto server that checks credentials (moto's INITIAL_NO_AUTH_ACTION_COUNT=0)."""
    from components.s3server import free_port

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait()


def test_wrong_credentials_fail_in_one_line(
    scene: Path, authenticating_s3: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", authenticating_s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert run_prepare(str(scene), "s3://bucket/t", str(tmp_path / "m.json")) == 1
    assert "S3 rejected the credentials" in capsys.readouterr().err
