//! Photo files natively: orientation, layouts, depths, formats and the decoding limits of
//! `daclip_webgpu::photo`, without the models.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;

use common::photos::{jpeg_with_orientation, pattern};
use common::scratch;
use daclip_webgpu::photo::{write, Layout, OutputFormat, Photo};
use image::DynamicImage;


#[test]
fn exif_orientation_is_applied_on_input() {
    let dir = scratch("orientation");
    let path = dir.join("portrait.jpg");
    jpeg_with_orientation(&pattern(40, 48), 6, &path);
    // What is stored, decoded without looking at the EXIF block, turned by hand.
    let stored = image::open(&path).unwrap().to_rgb8();
    assert_eq!(stored.dimensions(), (40, 48));
    let upright = image::imageops::rotate90(&stored);
    let photo = Photo::read(&path).unwrap();
    println!("EXIF orientation 6: stored 40x48, read {}x{}", photo.width, photo.height);
    assert_eq!((photo.width, photo.height), (48, 40), "orientation 6 is a quarter turn clockwise");
    assert!(photo.rgb == upright.into_raw(), "the pixels are the stored ones turned upright");
    for (value, want) in [(1u16, (40, 48)), (3, (40, 48)), (8, (48, 40))] {
        jpeg_with_orientation(&pattern(40, 48), value, &path);
        let p = Photo::read(&path).unwrap();
        assert_eq!((p.width, p.height), want, "orientation {value}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_input_format_is_read_and_layouts_are_kept() {
    let dir = scratch("formats");
    let rgb = pattern(40, 48);
    let img = DynamicImage::ImageRgb8(rgb.clone());
    for ext in ["png", "webp", "tiff", "bmp", "gif", "jpg"] {
        let path = dir.join(format!("p.{ext}"));
        img.save(&path).unwrap();
        let p = Photo::read(&path).unwrap();
        assert_eq!((p.width, p.height, p.bits), (40, 48, 8), "{ext}");
        if ["png", "webp", "tiff", "bmp"].contains(&ext) {
            assert!(p.rgb == rgb.as_raw().as_slice(), "{ext}: lossless formats read back exactly");
        }
    }
    // The format comes from the content: a PNG named .jpg is a PNG.
    std::fs::copy(dir.join("p.png"), dir.join("misnamed.jpg")).unwrap();
    assert_eq!(Photo::read(&dir.join("misnamed.jpg")).unwrap().rgb, rgb.as_raw().as_slice());

    let cases = [
        (DynamicImage::ImageLuma8(image::GrayImage::from_fn(8, 8, |x, _| image::Luma([x as u8 * 30]))), Layout::Gray, 8),
        (DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(8, 8, |x, y| image::LumaA([x as u8, y as u8 * 30]))), Layout::GrayAlpha, 8),
        (DynamicImage::ImageRgba8(image::RgbaImage::from_fn(8, 8, |x, y| image::Rgba([1, 2, 3, (x * 8 + y) as u8]))), Layout::Rgba, 8),
        (DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(8, 8, |x, _| image::Rgb([x as u16 * 8000, 1, 65535]))), Layout::Rgb, 16),
    ];
    for (img, layout, bits) in cases {
        let path = dir.join("l.png");
        img.save(&path).unwrap();
        let p = Photo::read(&path).unwrap();
        assert_eq!((p.layout, p.bits), (layout, bits), "{:?}", img.color());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_files_are_refused_with_their_reason() {
    let dir = scratch("bad");
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"this is not an image at all").unwrap();
    let err = Photo::read(&garbage).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("garbage.png") && err.contains("cannot read the image") && err.contains("WebP"), "{err}");

    let truncated = dir.join("truncated.png");
    DynamicImage::ImageRgb8(pattern(40, 48)).save(&truncated).unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Photo::read(&truncated).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("cannot read the image"), "{err}");

    // A PNG header that claims 100000 x 100000 pixels (30 GB of RGB): refused from the
    // header, before anything that size is allocated.
    let huge = dir.join("huge.png");
    std::fs::write(&huge, png_header(100_000, 100_000)).unwrap();
    let err = Photo::read(&huge).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("100000x100000") && err.contains("at most 16384 pixels a side"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A PNG file of an 8-bit RGB image of `w` x `h` whose data chunk is empty: a header
/// that promises what the file does not hold.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [ihdr, b"IDAT".to_vec(), b"IEND".to_vec()] {
        out.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn output_formats_and_their_limits() {
    let dir = scratch("outputs");
    let img16 = DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(8, 8, |x, y| image::Rgba([x as u16 * 8000, y as u16, 7, 65535 - x as u16])));
    for (ext, format) in [("png", OutputFormat::Png), ("tiff", OutputFormat::Tiff)] {
        let path = dir.join(format!("o.{ext}"));
        write(&img16, &path, format, 95).unwrap();
        assert!(image::open(&path).unwrap() == img16, "{ext} keeps 16-bit RGBA exactly");
    }
    for format in [OutputFormat::Jpeg, OutputFormat::WebP] {
        let err = write(&img16, &dir.join("o.x"), format, 95).unwrap_err().to_string();
        assert!(err.contains("cannot hold 16 bits"), "{err}");
    }
    let la = DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(8, 8, |x, y| image::LumaA([x as u8 * 9, y as u8 * 9])));
    let path = dir.join("la.webp");
    write(&la, &path, OutputFormat::WebP, 95).unwrap();
    let back = image::open(&path).unwrap().to_luma_alpha8();
    assert!(back == la.to_luma_alpha8(), "lossless WebP keeps grey and alpha");
    let path = dir.join("la.tiff");
    write(&la, &path, OutputFormat::Tiff, 95).unwrap();
    assert!(image::open(&path).unwrap().to_luma_alpha8() == la.to_luma_alpha8(), "TIFF keeps grey and alpha (stored as RGBA)");
    assert_eq!(OutputFormat::from_path(Path::new("a/B.JPEG")), Some(OutputFormat::Jpeg));
    assert_eq!(OutputFormat::from_path(Path::new("a.gif")), None);
    std::fs::remove_dir_all(&dir).ok();
}
