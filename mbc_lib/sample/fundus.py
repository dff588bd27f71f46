"""Synthetic fundus photographs for a glaucoma task, with the metadata real cameras leave.

The vertical cup-to-disc ratio (CDR) drawn into each image decides its graded label; brightness,
contrast, colour, blur, disc size and position vary so that the label must be learnt from the cup.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo

from . import photo_meta as pm
from .identities import SampleIdentity, rng_for

GLAUCOMA_PREVALENCE = 0.4
CDR_THRESHOLD = 0.55
GRADER_NOISE = 0.04  # half-width of the uniform grader disagreement on the CDR
PNG_FRACTION = 0.2
_CAMERAS = (
    ("OCULARIX", "RetinaCam FX-50", "RetinaCam Capture 4.2.1"),
    ("NYCTOPTIX", "FundoScope 3", "FundoView 2.8"),
    ("VISALDRA", "VX-45 Mydriatic", "VX Imaging Suite 11.0"),
)


@dataclass(frozen=True)
class FundusRecord:
    """One row of ``labels.csv``."""

    path: str
    patient_id: str
    eye: str
    glaucoma: int
    cdr: float


@dataclass(frozen=True)
class _Shot:
    identity: SampleIdentity
    eye: str
    cdr: float
    glaucoma: int
    when: tuple[int, int, int, int, int, int]
    camera: tuple[str, str, str]
    gps: tuple[float, float]


def _angle_to(target: float, heading: float) -> float:
    return (target - heading + math.pi) % (2 * math.pi) - math.pi


@dataclass
class _VesselPainter:
    """Draws random-walk vessel trees into a greyscale mask."""

    draw: ImageDraw.ImageDraw
    rng: np.random.Generator
    fov: tuple[float, float, float]  # centre x, centre y, radius: growth stops outside
    shade: int

    def grow(
        self,
        start: tuple[float, float],
        heading: float,
        target: float,
        width: float,
        step: float,
        depth: int,
    ) -> None:
        """One vessel bending towards ``target`` heading, branching as it thins."""
        rng, (x, y), (cx, cy, radius) = self.rng, start, self.fov
        pull = 0.05 + 0.05 * rng.random()
        while width >= 0.8 and math.hypot(x - cx, y - cy) < radius:
            heading += pull * _angle_to(target, heading) + rng.normal(0.0, 0.12)
            nx, ny = x + step * math.cos(heading), y + step * math.sin(heading)
            w = max(1, round(width))
            self.draw.line([(x, y), (nx, ny)], fill=self.shade, width=w)
            if w > 2:
                self.draw.ellipse([nx - w / 2, ny - w / 2, nx + w / 2, ny + w / 2], fill=self.shade)
            x, y = nx, ny
            width *= 0.985
            if depth < 3 and rng.random() < 0.08:
                side = 1.0 if rng.random() < 0.5 else -1.0
                child = heading + side * rng.uniform(0.5, 1.1)
                self.grow((x, y), child, child + side * 0.3, width * 0.68, step * 0.9, depth + 1)
                width *= 0.88


def _vessel_mask(
    rng: np.random.Generator,
    size: tuple[int, int],
    disc: tuple[float, float],
    disc_r: float,
    side: float,
    fov: tuple[float, float, float],
) -> np.ndarray:
    """Branching vessels from the disc: temporal arcades and shorter nasal branches."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    temporal = math.pi if side > 0 else 0.0
    nasal = 0.0 if side > 0 else math.pi
    step = 0.22 * disc_r
    main = [(-math.pi / 2, temporal), (math.pi / 2, temporal)]
    twigs = [(nasal - 0.8, nasal - 0.4), (nasal + 0.8, nasal + 0.4), (nasal, nasal)]
    for shade, scale in ((255, 0.14), (185, 0.10)):  # veins, then arteries
        painter = _VesselPainter(draw, rng, fov, shade)
        for up_down, target in main:
            heading = up_down - side * rng.uniform(0.1, 0.45) * (1 if up_down < 0 else -1)
            painter.grow(disc, heading, target, scale * disc_r, step, 0)
        for heading, target in twigs:
            if rng.random() < 0.8:
                painter.grow(
                    disc, heading + rng.normal(0, 0.2), target, scale * disc_r * 0.7, step, 1
                )
    mask = mask.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    low = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    img = Image.fromarray(low, mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _soft_ellipse(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float
) -> np.ndarray:
    dist = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return 0.5 + 0.5 * np.tanh(0.5 * (1.0 - dist) * ry / edge)


def render_fundus(rng: np.random.Generator, eye: str, cdr: float) -> np.ndarray:
    """An RGB uint8 fundus photograph of one eye whose vertical cup/disc ratio is ``cdr``."""
    h = int(rng.integers(384, 513))
    w = int(rng.integers(h, min(512, round(h * 1.33)) + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2 + rng.normal(0, 4), h / 2 + rng.normal(0, 4)
    radius = 0.5 * h * rng.uniform(0.9, 1.0)
    r = np.hypot(xx - cx, yy - cy) / radius
    side = 1.0 if eye == "R" else -1.0

    base = np.array([0.80, 0.34, 0.14], np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    gx, gy = rng.normal(0, 0.18, 2)
    illum = (
        1.0
        - 0.38 * r**2
        + gx * (xx - cx) / radius
        + gy * (yy - cy) / radius
        + 0.06 * _smooth_noise(rng, (w, h), 6)
        + 0.02 * _smooth_noise(rng, (w, h), 40)
    )
    img = base[None, None, :] * illum[..., None]

    disc_r = radius * rng.uniform(0.14, 0.19)
    dx = cx + side * radius * rng.uniform(0.28, 0.42)
    dy = cy + radius * rng.uniform(-0.1, 0.1)
    mx, my = dx - side * 5.0 * disc_r, dy + rng.normal(0, 0.3) * disc_r
    macula = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * (1.3 * disc_r) ** 2))
    img *= (1.0 - 0.3 * macula)[..., None]

    rim = _soft_ellipse(xx, yy, dx, dy, disc_r * rng.uniform(0.85, 0.95), disc_r, 1.5)
    disc_col = np.array([1.0, 0.66, 0.44], np.float32) * rng.uniform(0.85, 1.05)
    img = (
        img * (1 - rim[..., None]) + disc_col * rim[..., None] * np.clip(illum, 0.5, 1.2)[..., None]
    )
    cup_r = cdr * disc_r
    cup = _soft_ellipse(
        xx,
        yy,
        dx - side * 0.12 * (disc_r - cup_r),
        dy + rng.normal(0, 0.03) * disc_r,
        cup_r * rng.uniform(0.85, 1.0),
        cup_r,
        2.5,
    )
    cup_col = np.array([1.0, 0.94, 0.84], np.float32) * rng.uniform(1.0, 1.15)
    img = img * (1 - cup[..., None]) + cup_col * cup[..., None]

    vessels = _vessel_mask(rng, (w, h), (dx, dy), disc_r, side, (cx, cy, radius * 1.05))
    vessel_col = np.array([0.42, 0.08, 0.04], np.float32) * illum[..., None]
    alpha = 0.8 * vessels[..., None]
    img = img * (1 - alpha) + vessel_col * alpha

    img = np.clip(img * rng.uniform(0.75, 1.2), 0, None) ** rng.uniform(0.8, 1.25)
    img *= rng.uniform(0.92, 1.08, 3).astype(np.float32)
    fov = np.clip((1.0 - r) * radius / 2.0, 0.0, 1.0)[..., None]
    img = img * fov + 0.012 * (1 - fov)
    img += rng.normal(0.0, rng.uniform(0.008, 0.022), img.shape).astype(np.float32)
    photo = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    return np.asarray(photo)


def _display(person_name: str) -> str:
    return " ".join(reversed(person_name.split("^")))


def _stamp(when: tuple[int, ...]) -> str:
    return "{:04d}:{:02d}:{:02d} {:02d}:{:02d}:{:02d}".format(*when)


def _description(shot: _Shot) -> str:
    who = shot.identity
    return f"Fundus {shot.eye} eye - {who.dicom_name} - ID {who.patient_id}"


def _exif(shot: _Shot, photo: Image.Image, uid: str) -> bytes:
    who, (make, model, software) = shot.identity, shot.camera
    thumb = photo.copy()
    thumb.thumbnail((160, 120))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=70)
    res = pm.rational_tag
    lat, lon = shot.gps
    ifd0 = [
        pm.ascii_tag(0x010E, _description(shot)),
        pm.ascii_tag(0x010F, make),
        pm.ascii_tag(0x0110, model),
        pm.short_tag(0x0112, 1),
        res(0x011A, (300, 1)),
        res(0x011B, (300, 1)),
        pm.short_tag(0x0128, 2),
        pm.ascii_tag(0x0131, software),
        pm.ascii_tag(0x0132, _stamp(shot.when)),
        pm.ascii_tag(0x013B, _display(who.operator)),
        pm.ascii_tag(0x8298, who.institution),
    ]
    comment = (
        f"Patient: {who.dicom_name}; ID: {who.patient_id}; DOB: {who.birth_date}; "
        f"Sex: {who.sex}; Phone: {who.phone}; Accession: {who.accession_number}"
    )
    exif_ifd = [
        pm.undefined_tag(0x9000, b"0232"),
        pm.ascii_tag(0x9003, _stamp(shot.when)),
        pm.ascii_tag(0x9004, _stamp(shot.when)),
        pm.undefined_tag(0x9286, pm.user_comment(comment)),
        pm.short_tag(0xA001, 1),
        pm.long_tag(0xA002, photo.width),
        pm.long_tag(0xA003, photo.height),
        pm.ascii_tag(0xA420, uid),
        pm.ascii_tag(0xA430, who.institution),
        pm.ascii_tag(0xA431, who.device_serial),
        pm.ascii_tag(0xA434, f"{model} 45deg"),
    ]
    gps_ifd = [
        pm.byte_tag(0x0000, 2, 3, 0, 0),
        pm.ascii_tag(0x0001, "N" if lat >= 0 else "S"),
        res(0x0002, *pm.degrees_rationals(lat)),
        pm.ascii_tag(0x0003, "E" if lon >= 0 else "W"),
        res(0x0004, *pm.degrees_rationals(lon)),
        pm.ascii_tag(0x001D, "{:04d}:{:02d}:{:02d}".format(*shot.when[:3])),
    ]
    ifd1 = [
        pm.short_tag(0x0103, 6),
        res(0x011A, (72, 1)),
        res(0x011B, (72, 1)),
        pm.short_tag(0x0128, 2),
    ]
    return pm.build_exif(ifd0, exif_ifd, gps_ifd, ifd1, buf.getvalue())


def _xmp(shot: _Shot) -> bytes:
    who = shot.identity
    return pm.xmp_packet(
        {
            "PatientName": who.dicom_name,
            "PatientID": who.patient_id,
            "PatientBirthDate": who.birth_date,
            "PatientSex": who.sex,
            "PatientAddress": who.address,
            "PatientPhone": who.phone,
            "AccessionNumber": who.accession_number,
            "ReferringPhysician": who.referring_physician,
            "Laterality": shot.eye,
            "DeviceSerialNumber": who.device_serial,
            "Institution": who.institution,
            "CreateDate": _stamp(shot.when),
        },
        creator=_display(who.operator),
        description=_description(shot),
    )


def _icc(shot: _Shot) -> bytes:
    make, model, _ = shot.camera
    serial = shot.identity.device_serial
    return pm.icc_profile(
        f"{make} {model} S/N {serial}",
        f"{model} S/N {serial}",
        f"Calibrated at {shot.identity.institution}",
        shot.when,
    )


def _encode(photo: Image.Image, shot: _Shot, png: bool, rng: np.random.Generator) -> bytes:
    who = shot.identity
    uid = rng.bytes(16).hex()
    buf = io.BytesIO()
    if png:
        info = PngInfo()
        info.add_text("Author", _display(who.operator))
        info.add_text("Description", _description(shot))
        info.add_text("Source", f"{shot.camera[0]} {shot.camera[1]} S/N {who.device_serial}")
        info.add_text(
            "Comment",
            f"Patient {who.dicom_name} ID {who.patient_id} DOB {who.birth_date} {who.address}",
            zip=True,
        )
        info.add_itxt("XML:com.adobe.xmp", _xmp(shot).decode("utf-8"))
        info.add(b"tIME", pm.png_time(shot.when))
        photo.save(buf, "PNG", pnginfo=info, exif=_exif(shot, photo, uid), icc_profile=_icc(shot))
    else:
        comment = (
            f"PATIENT={who.dicom_name} ID={who.patient_id} DOB={who.birth_date} "
            f"EYE={shot.eye} ACC={who.accession_number}"
        )
        photo.save(
            buf,
            "JPEG",
            quality=int(rng.integers(88, 96)),
            exif=_exif(shot, photo, uid),
            xmp=_xmp(shot),
            comment=comment.encode("ascii"),
            icc_profile=_icc(shot),
        )
    return buf.getvalue()


def _shots(seed: int, n_images: int, identities: list[SampleIdentity]) -> list[_Shot]:
    shots: list[_Shot] = []
    for p, who in enumerate(identities):
        rng = rng_for(seed, "fundus-patient", p)
        sick = rng.random() < GLAUCOMA_PREVALENCE
        day = np.datetime64("2018-01-01") + int(rng.integers(0, 6 * 365))
        y, m, d = (int(v) for v in str(day).split("-"))
        hour, minute = int(rng.integers(8, 17)), int(rng.integers(0, 58))
        camera = _CAMERAS[int(rng.integers(len(_CAMERAS)))]
        gps = (float(rng.uniform(46.0, 55.0)), float(rng.uniform(-4.0, 16.0)))
        for k, eye in enumerate(("R", "L")):
            cdr = round(float(np.clip(rng.normal(0.65 if sick else 0.35, 0.1), 0.1, 0.9)), 3)
            graded = int(cdr + rng.uniform(-GRADER_NOISE, GRADER_NOISE) >= CDR_THRESHOLD)
            when = (y, m, d, hour, minute + k, int(rng.integers(0, 60)))
            shots.append(_Shot(who, eye, cdr, graded, when, camera, gps))
    return shots[:n_images]


def write_fundus(
    root: Path, seed: int, n_images: int, identities: list[SampleIdentity]
) -> list[FundusRecord]:
    """Write ``root/images/IMG_nnnn.{JPG,PNG}`` and ``root/labels.csv``; return the rows."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    shots = _shots(seed, n_images, identities)
    n_png = round(PNG_FRACTION * len(shots))
    as_png = set(rng_for(seed, "fundus-format").permutation(len(shots))[:n_png].tolist())
    records: list[FundusRecord] = []
    for i, shot in enumerate(shots):
        rng = rng_for(seed, "fundus-image", i)
        photo = Image.fromarray(render_fundus(rng, shot.eye, shot.cdr), "RGB")
        name = f"IMG_{i + 1:04d}.{'PNG' if i in as_png else 'JPG'}"
        (images / name).write_bytes(_encode(photo, shot, i in as_png, rng))
        records.append(
            FundusRecord(
                f"images/{name}", shot.identity.patient_id, shot.eye, shot.glaucoma, shot.cdr
            )
        )
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["path", "patient_id", "eye", "glaucoma", "cdr"])
        for rec in records:
            out.writerow([rec.path, rec.patient_id, rec.eye, rec.glaucoma, f"{rec.cdr:.3f}"])
    return records


__all__ = ["CDR_THRESHOLD", "FundusRecord", "render_fundus", "write_fundus"]
