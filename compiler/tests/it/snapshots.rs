//! The Star Wars example's model as JSON (`compile --emit model -o json`'s serialization),
//! in `snapshots/examples/`. Every stage's text form of every example is in the stage
//! matrix, `cli/tests/stages.rs`.

use pipec::driver;
use pipec::model::build::BuildOptions;
use std::path::PathBuf;

#[test]
fn example_model_json() {
    let inputs = vec![PathBuf::from("../examples/starwars")];
    let loaded = driver::load(&inputs, &BuildOptions::default());
    assert!(
        !loaded.has_errors(),
        "{inputs:?}:\n{}",
        pipec::diag::emit_to_string(&loaded.sources, &loaded.diags)
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/examples");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_info(&vec!["../examples/starwars".to_string()]);
    settings.bind(|| {
        insta::assert_json_snapshot!("starwars.model-json", loaded.cluster);
    });
}
