//! Photo files for the command-line and photo tests.

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageEncoder, RgbImage};

/// A picture whose every pixel differs from its neighbours.
pub fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 6) as u8, (y * 5) as u8, ((x * 7 + y * 3) % 256) as u8]))
}

/// A big-endian TIFF block with one entry: Orientation (0x0112, SHORT) = `value`, as
/// phones write it into JPEG's APP1 "Exif" segment.
pub fn exif_orientation(value: u16) -> Vec<u8> {
    let mut b = b"MM\0\x2a\0\0\0\x08".to_vec();
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
    b.extend_from_slice(&value.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    b
}

/// `img` as a JPEG file with EXIF orientation `orientation`.
pub fn jpeg_with_orientation(img: &RgbImage, orientation: u16, path: &Path) {
    let mut bytes = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut bytes, 95);
    enc.set_exif_metadata(exif_orientation(orientation)).unwrap();
    DynamicImage::ImageRgb8(img.clone()).write_with_encoder(enc).unwrap();
    std::fs::write(path, bytes).unwrap();
}
