//! Our tokenizer gives the original open_clip ids on texts that exercise its corners
//! (tests/fixtures/tokenizer.json, written by tests/reference/make_tokenizer_fixture.py).

use daclip_webgpu::models::clip::tokenizer::tokenize;

#[test]
fn token_ids_equal_open_clip() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = tokenize(text, 77);
        let same = got == want;
        println!("{} {:?}", if same { "same     " } else { "DIFFERENT" }, text.chars().take(60).collect::<String>());
        if !same {
            failures.push(format!("{text:?}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} texts tokenized exactly as open_clip does", cases.len());
}

/// ftfy.fix_text, as the original calls it, normalises to NFC: a decomposed accent (what
/// macOS file names and some keyboards produce) tokenizes as the composed character.
#[test]
fn decomposed_accents_tokenize_as_composed_ones() {
    for (decomposed, composed) in [("cafe\u{301} au lait", "café au lait"), ("Stra\u{df}e nin\u{303}o", "Straße niño"), ("A\u{30a}ngstro\u{308}m", "Ångström")] {
        assert_ne!(decomposed, composed);
        assert_eq!(tokenize(decomposed, 77), tokenize(composed, 77), "{decomposed:?}");
    }
}
