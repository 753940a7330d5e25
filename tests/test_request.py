"""Refuse before paying: photos and parameters against the documented rules."""
import io

import pytest
from PIL import Image

import skintrack
from skintrack.api.request import Params, prepare_photo
from skintrack.sample import sample_photo


def test_jpeg_by_content_not_by_extension(tmp_path):
    png = sample_photo(tmp_path, "looks.jpg", fmt="PNG")
    with pytest.raises(skintrack.PhotoRejected, match=r"looks\.jpg: is PNG by content"):
        prepare_photo(png)
    fixed = prepare_photo(png, fix=True)
    assert fixed.fixes == ("converted PNG to JPEG",) and fixed.data[:2] == b"\xff\xd8"


@pytest.mark.parametrize("size, message", [((200, 500), "more than 200x200"), ((500, 150), "more than 200x200"),
                                           ((4096, 300), "less than 4096x4096")])
def test_resolution_limits(tmp_path, size, message):
    path = sample_photo(tmp_path, "p.jpg", size=size)
    with pytest.raises(skintrack.PhotoRejected, match=message):
        prepare_photo(path)


def test_fix_downsizes_oversized_photos(tmp_path):
    photo = prepare_photo(sample_photo(tmp_path, "big.jpg", size=(5000, 3000)), fix=True)
    assert (photo.width, photo.height) == (4095, 2457) and photo.fixes == ("downsized 5000x3000 to 4095x2457",)
    assert Image.open(io.BytesIO(photo.data)).size == (4095, 2457)


def test_a_fix_keeps_which_way_up_the_photo_is_read(tmp_path):
    """A phone's portrait photo is stored turned, with an EXIF orientation tag saying so: a fix that downsized or
    converted it dropped the tag, so the API got the photo on its side where the original is read upright."""
    turned = Image.Exif()
    turned[0x0112] = 6  # rotate 90 degrees to show
    Image.open(sample_photo(tmp_path, "portrait.jpg", size=(5000, 3000))).save(tmp_path / "tagged.jpg", exif=turned)
    Image.open(tmp_path / "tagged.jpg").save(tmp_path / "tagged.png", exif=turned)
    for name in ("tagged.jpg", "tagged.png"):
        sent = Image.open(io.BytesIO(prepare_photo(tmp_path / name, fix=True).data))
        assert sent.getexif().get(0x0112) == 6 and sent.size == (4095, 2457)
    plain = prepare_photo(sample_photo(tmp_path, "plain.jpg", size=(5000, 3000)), fix=True).data
    assert 0x0112 not in Image.open(io.BytesIO(plain)).getexif()  # nothing added where there was no tag


def test_over_8_mb(tmp_path):
    import os

    path = tmp_path / "huge.jpg"
    Image.frombytes("RGB", (3000, 3000), os.urandom(3000 * 3000 * 3)).save(path, "JPEG", quality=100)
    assert path.stat().st_size > 8 * 2**20
    with pytest.raises(skintrack.PhotoRejected, match="at most 8 MB"):
        prepare_photo(path)
    assert len(prepare_photo(path, fix=True).data) <= 8 * 1024 * 1024


def test_not_an_image(tmp_path):
    (tmp_path / "x.jpg").write_text("hello")
    with pytest.raises(skintrack.PhotoRejected, match="not an image"):
        prepare_photo(tmp_path / "x.jpg")


def test_a_photo_cut_short_or_damaged_is_refused_before_paying(tmp_path):
    """Its header alone gives a JPEG and a size: the whole stream is decoded before the photo may be sent."""
    Image.new("RGB", (800, 600), (200, 150, 120)).save(tmp_path / "whole.jpg", quality=90)
    raw = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[:len(raw) // 3])
    (tmp_path / "zeros.jpg").write_bytes(raw[:300] + bytes(5000))
    assert prepare_photo(tmp_path / "whole.jpg").width == 800
    for name in ("cut.jpg", "zeros.jpg"):
        with pytest.raises(skintrack.PhotoRejected, match=rf"{name}: its image data is damaged or cut short"):
            prepare_photo(tmp_path / name, fix=True)  # nothing to fix in data that is not there


def test_a_photo_of_too_many_pixels_to_open_is_refused_by_name(tmp_path):
    Image.new("L", (15000, 15000)).save(tmp_path / "panorama.jpg", quality=10)  # 225 MP: Pillow's bomb guard
    with pytest.raises(skintrack.PhotoRejected, match=r"panorama\.jpg: too many pixels to open safely"):
        prepare_photo(tmp_path / "panorama.jpg", fix=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"return_maps": ("red",)}, "return_maps: unknown value 'red'"),
    ({"return_marks": ("wrinkles",)}, "return_marks: unknown value 'wrinkles'"),
    ({"return_side_results": ("jaw",)}, "return_side_results: unknown value 'jaw'"),
    ({"roi_outline_color": {"lips_color": "FF0000"}}, "unknown key 'lips_color'"),
    ({"roi_outline_color": {"acne_color": "#FF0000"}}, "6-digit hex"),
    ({"roi_outline_color": {"acne_color": "FF00"}}, "6-digit hex"),
])
def test_parameters(kwargs, message):
    with pytest.raises(skintrack.UsageError, match=message):
        Params(**kwargs)


def test_parameters_form_and_key():
    p = Params(return_maps=("red_area", "brown_area"), roi_outline_color={"acne_color": "ff0000"})
    assert p.form() == {"return_maps": "red_area,brown_area", "roi_outline_color": '{"acne_color": "ff0000"}'}
    assert p.key() != Params().key() and p.key() == Params(return_maps=("red_area", "brown_area"),
                                                          roi_outline_color={"acne_color": "ff0000"}).key()


def test_a_simulated_photo_is_the_same_bytes_for_the_same_seed(tmp_path):
    """Tests that send a photo twice send the same photo (Pillow's own noise is not seeded)."""
    first, again = (sample_photo(tmp_path, f"{n}.jpg", seed=3).read_bytes() for n in ("a", "b"))
    assert first == again != sample_photo(tmp_path, "c.jpg", seed=4).read_bytes()
