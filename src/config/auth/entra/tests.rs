//! `[auth.entra]`: what loads, what is refused, and what `check-config` prints.

use crate::auth::entra::CallerMatch;
use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, TENANT};
use crate::config::Config;

const MSP: &str = "7a1b2c3d-0000-4000-8000-00000000aaaa";

fn file(entra: &str) -> String {
    format!(
        "{}\n[auth]\nenabled = true\n\n{entra}",
        tenant(
            "contoso",
            TENANT,
            CLIENT,
            "client_secret = { env = \"S\" }\ntags = [\"gold\"]"
        )
    )
}

#[test]
fn a_section_loads_with_defaults_and_the_summary_prints_each_mapping() {
    let dir = tempdir();
    let text = file(&format!(
        "[auth.entra]\ntenant_id = \"{}\"\naudiences = [\"api://scoregate\"]\n\n\
         [[auth.entra.callers]]\nname = \"ops\"\nrole = \"Operator\"\ntenants = [\"*\"]\noperator = true\n\n\
         [[auth.entra.callers]]\nname = \"fn\"\nobject_id = \"{}\"\ntags = [\"gold\"]\nrequests_per_minute = 30\n",
        MSP.to_uppercase(),
        "11111111-2222-4333-8444-555555555555"
    ));
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    let entra = config.entra.as_ref().unwrap();
    assert_eq!(entra.tenants, vec![MSP.to_owned()], "lower-cased");
    assert_eq!(entra.leeway_seconds, 60);
    assert!(!entra.accept_delegated);
    assert_eq!(
        entra.authority.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(
        entra.issuers(MSP),
        [
            format!("https://login.microsoftonline.com/{MSP}/v2.0"),
            format!("https://sts.windows.net/{MSP}/"),
        ]
    );
    assert_eq!(
        entra.callers[0].matcher,
        CallerMatch::Role("Operator".into())
    );
    assert_eq!(entra.callers[1].requests_per_minute, 30);
    let summary = config.summary();
    assert!(summary.contains("0 API key(s)"), "{summary}");
    assert!(
        summary
            .contains("entra caller ops: role Operator -> all tenants, operator, 600 requests/min"),
        "{summary}"
    );
    assert!(
        summary.contains("entra caller fn: object_id 11111111-2222-4333-8444-555555555555 -> tenants [], tags [gold], 30 requests/min"),
        "{summary}"
    );
}

#[test]
fn a_custom_cloud_takes_its_authority_for_both_issuer_forms() {
    let dir = tempdir();
    let text = file(&format!(
        "[auth.entra]\ntenants = [\"{MSP}\"]\naudiences = [\"api://scoregate\"]\ncloud = \"custom\"\n\
         authority_host = \"https://127.0.0.1:8443\"\nleeway_seconds = 0\n\n\
         [[auth.entra.callers]]\nname = \"r\"\napp_id = \"{CLIENT}\"\ntenants = [\"contoso\"]\n"
    ));
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    let entra = config.entra.as_ref().unwrap();
    assert_eq!(
        entra.issuers(MSP),
        [
            format!("https://127.0.0.1:8443/{MSP}/v2.0"),
            format!("https://127.0.0.1:8443/{MSP}/"),
        ]
    );
    assert_eq!(
        entra.discovery_url().unwrap().as_str(),
        format!("https://127.0.0.1:8443/{MSP}/v2.0/.well-known/openid-configuration")
    );
}

#[test]
fn every_mistake_in_the_section_is_named() {
    let dir = tempdir();
    let text = file(
        "[auth.entra]\ntenant_id = \"msp\"\ntenants = [\"x\"]\n\
         audiences = [\"https://graph.microsoft.com\", \"00000003-0000-0000-c000-000000000000\", \"\"]\n\
         leeway_seconds = 301\ncloud = \"custom\"\n\n\
         [[auth.entra.callers]]\nname = \"a\"\nrole = \"R\"\napp_id = \"not-a-guid\"\ntenants = [\"nope\"]\n\n\
         [[auth.entra.callers]]\nname = \"a\"\nrole = \"R\"\noperator = true\ntags = [\"gold\"]\nrequests_per_minute = 0\n",
    );
    let path = write(&dir, "a.toml", &text);
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    for expected in [
        "auth.entra: set tenant_id or tenants (a multi-tenant caller app), not both",
        "auth.entra.audiences[0]: Microsoft Graph's tokens are never accepted",
        "auth.entra.audiences[1]: Microsoft Graph's tokens are never accepted",
        "auth.entra.audiences[2]: must not be empty",
        "auth.entra.leeway_seconds: must be at most 300",
        "auth.entra.authority_host: required with cloud = \"custom\"",
        "auth.entra.callers[0] (name \"a\"): set exactly one of role (an app role), app_id or object_id",
        "auth.entra.callers[0] (name \"a\").tenants[0]: no tenant \"nope\"",
        "auth.entra.callers[1] (name \"a\").name: another caller has this name",
        "auth.entra.callers[1] (name \"a\").operator: operators read /metrics",
        "auth.entra.callers[1] (name \"a\").requests_per_minute: must be greater than 0",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    let path = write(
        &dir,
        "b.toml",
        &file("[auth.entra]\naudiences = [\"api://s\"]\n"),
    );
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    assert!(all.contains("auth.entra.tenant_id: required"), "{all}");
    assert!(
        all.contains("auth.entra.callers: no caller is mapped"),
        "{all}"
    );
}
