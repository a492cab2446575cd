//! Photo files natively (the browser decodes its own): PNG, JPEG, WebP, TIFF, BMP and GIF
//! (first frame) in, decoded upright (EXIF orientation applied, as every viewer shows
//! them); PNG, JPEG, WebP (lossless) and TIFF out, upright and in the input's layout:
//! grey stays grey, alpha is copied through unchanged, 16 bits where asked. The models
//! see 8-bit RGB, as they were trained on; restoration works on RGB, as the original.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::tiff::TiffEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageReader, Limits, Luma, LumaA, Rgb, Rgba};

use crate::error::{Error, Result};
use crate::models::clip::preprocess::ImageRef;
use crate::restore::{quantize, Restored};
use crate::restore::tiles::{MAX_PIXELS, MAX_SIDE};

/// What the decoder reads, for messages.
pub const INPUT_FORMATS: &str = "PNG, JPEG, WebP, TIFF, BMP and GIF";

/// File-name extensions of the inputs (lower case).
pub const INPUT_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "gif"];

/// The channels a photo has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
}

impl Layout {
    pub fn has_alpha(self) -> bool {
        matches!(self, Layout::GrayAlpha | Layout::Rgba)
    }
}

/// A decoded photo, upright.
#[derive(Debug, Clone)]
pub struct Photo {
    pub width: usize,
    pub height: usize,
    pub layout: Layout,
    /// Bits per sample as stored: 8 or 16 (32-bit float TIFFs count as 16).
    pub bits: u8,
    /// What the models see: 8-bit RGB, interleaved (grey replicated).
    pub rgb: Vec<u8>,
    /// The alpha channel as 16-bit values (8-bit ones times 257, so exact either way).
    alpha: Option<Vec<u16>>,
}

impl Photo {
    /// Reads and decodes `path` (its format from its content, not its name), refusing
    /// images larger than a restore takes before decoding them.
    pub fn read(path: &Path) -> Result<Photo> {
        let name = path.display();
        let cannot = |e: &dyn std::fmt::Display| Error::Io(format!("{name}: cannot read the image ({e}); {INPUT_FORMATS} are supported"));
        let mut reader = ImageReader::open(path).map_err(|e| cannot(&e))?.with_guessed_format().map_err(|e| cannot(&e))?;
        if reader.format().is_none() {
            return Err(cannot(&"not a known image format"));
        }
        let mut limits = Limits::default();
        // A 64 MP image at 16 bits RGBA, with room; the size check below says it first.
        limits.max_alloc = Some(1 << 30);
        reader.limits(limits);
        let mut decoder = reader.into_decoder().map_err(|e| cannot(&e))?;
        let (w, h) = decoder.dimensions();
        let (w, h) = (w as usize, h as usize);
        if w.max(h) > MAX_SIDE || w * h > MAX_PIXELS {
            return Err(Error::Shape(format!(
                "{name} is {w}x{h}: images of at most {MAX_SIDE} pixels a side and {} MP can be restored",
                MAX_PIXELS >> 20
            )));
        }
        let orientation = decoder.orientation().map_err(|e| cannot(&e))?;
        let mut img = DynamicImage::from_decoder(decoder).map_err(|e| cannot(&e))?;
        img.apply_orientation(orientation);
        Ok(Photo::from_image(&img))
    }

    fn from_image(img: &DynamicImage) -> Photo {
        use image::ColorType::*;
        let layout = match img.color() {
            L8 | L16 => Layout::Gray,
            La8 | La16 => Layout::GrayAlpha,
            Rgba8 | Rgba16 | Rgba32F => Layout::Rgba,
            _ => Layout::Rgb,
        };
        let bits = sample_bits(img.color());
        let alpha = layout.has_alpha().then(|| img.to_rgba16().pixels().map(|p| p[3]).collect());
        Photo { width: img.width() as usize, height: img.height() as usize, layout, bits, rgb: img.to_rgb8().into_raw(), alpha }
    }

    /// The 8-bit RGB image the models take.
    pub fn as_image_ref(&self) -> ImageRef<'_> {
        ImageRef { width: self.width, height: self.height, channels: 3, data: &self.rgb }
    }

    /// The restored RGB of this photo in its own layout (grey as Rec. 709 luma, the alpha
    /// channel copied) at `bits` (8 or 16) per sample.
    pub fn compose(&self, restored: &Restored, bits: u8) -> Result<DynamicImage> {
        if (restored.width, restored.height) != (self.width, self.height) {
            return Err(Error::Shape(format!("a {}x{} restore does not belong to a {}x{} photo", restored.width, restored.height, self.width, self.height)));
        }
        let (w, h) = (self.width as u32, self.height as u32);
        let luma = |i: usize| 0.2126 * restored.value(0, i) + 0.7152 * restored.value(1, i) + 0.0722 * restored.value(2, i);
        let alpha = |i: usize| self.alpha.as_ref().map_or(u16::MAX, |a| a[i]);
        let img = match bits {
            8 => {
                let a8 = |i| (alpha(i) / 257) as u8;
                let rgb = restored.to_rgb8().data;
                match self.layout {
                    Layout::Gray => DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([quantize(luma(pixel(x, y, w)), 255.0) as u8]))),
                    Layout::GrayAlpha => DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
                        let i = pixel(x, y, w);
                        LumaA([quantize(luma(i), 255.0) as u8, a8(i)])
                    })),
                    Layout::Rgb => DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, rgb).expect("3 bytes a pixel")),
                    Layout::Rgba => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                        let i = pixel(x, y, w);
                        Rgba([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], a8(i)])
                    })),
                }
            }
            16 => {
                let rgb = restored.to_rgb16();
                match self.layout {
                    Layout::Gray => DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| Luma([quantize(luma(pixel(x, y, w)), 65535.0) as u16]))),
                    Layout::GrayAlpha => DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
                        let i = pixel(x, y, w);
                        LumaA([quantize(luma(i), 65535.0) as u16, alpha(i)])
                    })),
                    Layout::Rgb => DynamicImage::ImageRgb16(ImageBuffer::<Rgb<u16>, _>::from_raw(w, h, rgb).expect("3 samples a pixel")),
                    Layout::Rgba => DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                        let i = pixel(x, y, w);
                        Rgba([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], alpha(i)])
                    })),
                }
            }
            _ => return Err(Error::Usage(format!("the output depth must be 8 or 16 bits, not {bits}"))),
        };
        Ok(img)
    }
}

/// Bits per sample as this module counts them: 8, or 16 for anything wider (32-bit float
/// TIFFs included).
fn sample_bits(color: image::ColorType) -> u8 {
    if color.bytes_per_pixel() / color.channel_count() == 1 {
        8
    } else {
        16
    }
}

fn pixel(x: u32, y: u32, w: u32) -> usize {
    (y * w + x) as usize
}

/// The formats written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Jpeg,
    /// Lossless.
    WebP,
    Tiff,
}

impl OutputFormat {
    pub const NAMES: &'static str = ".png, .jpg, .jpeg, .webp, .tif or .tiff";

    /// From a file name's extension (any case).
    pub fn from_path(path: &Path) -> Option<OutputFormat> {
        Self::from_extension(&path.extension()?.to_str()?.to_ascii_lowercase())
    }

    pub fn from_extension(ext: &str) -> Option<OutputFormat> {
        Some(match ext {
            "png" => OutputFormat::Png,
            "jpg" | "jpeg" => OutputFormat::Jpeg,
            "webp" => OutputFormat::WebP,
            "tif" | "tiff" => OutputFormat::Tiff,
            _ => return None,
        })
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
            OutputFormat::WebP => "webp",
            OutputFormat::Tiff => "tiff",
        }
    }

    pub fn keeps_alpha(self) -> bool {
        self != OutputFormat::Jpeg
    }

    pub fn has_16_bits(self) -> bool {
        matches!(self, OutputFormat::Png | OutputFormat::Tiff)
    }
}

/// Writes `img` to `path` as `format` (JPEG at `quality`, 1-100). What a format cannot
/// hold is converted: JPEG drops alpha, TIFF stores grey with alpha as RGBA; 16 bits in
/// JPEG or WebP are refused.
pub fn write(img: &DynamicImage, path: &Path, format: OutputFormat, quality: u8) -> Result<()> {
    let name = path.display();
    if sample_bits(img.color()) == 16 && !format.has_16_bits() {
        return Err(Error::Usage(format!("{name}: {} files cannot hold 16 bits a sample; write .png or .tiff", format.extension())));
    }
    let failed = |e: &dyn std::fmt::Display| Error::Io(format!("{name}: cannot write the image ({e})"));
    let file = BufWriter::new(File::create(path).map_err(|e| failed(&e))?);
    let written = match format {
        OutputFormat::Png => img.write_with_encoder(PngEncoder::new(file)),
        OutputFormat::Jpeg => img.write_with_encoder(JpegEncoder::new_with_quality(file, quality)),
        OutputFormat::WebP => img.write_with_encoder(WebPEncoder::new_lossless(file)),
        OutputFormat::Tiff => {
            let tiff = TiffEncoder::new(file);
            match img {
                DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(img.to_rgba8()).write_with_encoder(tiff),
                DynamicImage::ImageLumaA16(_) => DynamicImage::ImageRgba16(img.to_rgba16()).write_with_encoder(tiff),
                _ => img.write_with_encoder(tiff),
            }
        }
    };
    written.map_err(|e| failed(&e))
}
