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
