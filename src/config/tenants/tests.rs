use super::*;
use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, TENANT};
use crate::config::Config;
use crate::credential::Credential;

#[test]
fn every_bad_tenant_value_is_reported_with_the_tenant() {
    let dir = tempdir();
    let text = [
        tenant(
            "bad id",
            "not-a-guid",
            CLIENT,
            "client_secret = { env = \"MISSING\" }",
        ),
        tenant(
            "ok",
            TENANT,
            "xyz",
            "client_secret = { env = \"EMPTY\" }\ngeo = \"eu\"\ncloud = \"gcc\"",
        ),
        tenant(
            "ok",
            TENANT,
            CLIENT,
            "client_secret = { file = \"nope.txt\" }",
        ),
        tenant("nocred", TENANT, "11111111-2222-3333-4444-555555555555", ""),
    ]
    .concat();
    let path = write(&dir, "a.toml", &text);
    let problems = problems(Config::load_with_env(&path, env(&[("EMPTY", "  ")])));
    let all = problems.join("\n");
    for expected in [
        "tenants[0] (id \"bad id\").id:",
        "tenants[0] (id \"bad id\").tenant_id: \"not-a-guid\" is not a GUID",
        "environment variable MISSING is not set",
        "tenants[1] (id \"ok\").client_id: \"xyz\" is not a GUID",
        "tenants[1] (id \"ok\").client_secret: the secret is empty",
        "tenants[1] (id \"ok\").geo: geo API hosts exist only in the commercial cloud",
        "tenants[2] (id \"ok\").id: duplicates tenants[1]",
        "tenants[2] (id \"ok\").client_secret.file: cannot read",
        "tenants[3] (id \"nocred\"): needs a credential",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn a_multi_tenant_app_may_serve_several_tenants_but_not_twice_the_same() {
    let dir = tempdir();
    let other = "22222222-2222-4222-8222-222222222222";
    let text = [
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
        tenant("b", other, CLIENT, "client_secret = { env = \"S\" }"),
    ]
    .concat();
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    assert_eq!(config.registry.len(), 2);
    let twice = [
        text.clone(),
        tenant("c", other, CLIENT, "client_secret = { env = \"S\" }"),
    ]
    .concat();
    let path = write(&dir, "b.toml", &twice);
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    assert!(
        all.contains("same tenant_id and client_id as tenants[1]"),
        "{all}"
    );
}

#[test]
fn tenants_may_live_in_a_separate_file_and_gov_clouds_get_gov_hosts() {
    let dir = tempdir();
    write(
        &dir,
        "tenants.toml",
        &tenant("gov", TENANT, CLIENT, "client_secret = { file = \"s.txt\" }\ncloud = \"gcc-high\"\nscope = \"https://api-gov.securitycenter.microsoft.us/.default\""),
    );
    write(&dir, "s.txt", "secret\n");
    let path = write(&dir, "a.toml", "tenants_file = \"tenants.toml\"\n");
    let config = Config::load_with_env(&path, env(&[])).unwrap();
    let gov = config.registry.get("gov").unwrap();
    assert_eq!(
        gov.authority_host.as_str(),
        "https://login.microsoftonline.us/"
    );
    assert_eq!(
        gov.endpoint(crate::model::UpstreamService::Defender)
            .unwrap()
            .base
            .as_str(),
        "https://api-gov.securitycenter.microsoft.us/"
    );
    assert_eq!(
        &*gov
            .endpoint(crate::model::UpstreamService::Defender)
            .unwrap()
            .scope,
        "https://api-gov.securitycenter.microsoft.us/.default"
    );
    match &gov.credential {
        Credential::Secret(secret) => {
            assert_eq!(secrecy::ExposeSecret::expose_secret(secret), "secret")
        }
        Credential::Certificate(_) => panic!("expected a secret"),
    }
}

#[test]
fn metrics_default_to_upstream_and_are_overridden_per_tenant_and_by_environment() {
    use crate::upstream::Metric;
    let dir = tempdir();
    let other = "22222222-2222-4222-8222-222222222222";
    let text = [
        "[upstream]\nmetrics = [\"exposure\"]\n".to_owned(),
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
        tenant(
            "b",
            other,
            CLIENT,
            "client_secret = { env = \"S\" }\nmetrics = [\"secure\", \"device\"]\ngraph_scope = \"https://graph.example.test/.default\"\ngraph_max_concurrent = 2",
        ),
    ]
    .concat();
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    let a = config.registry.get("a").unwrap();
    assert_eq!(a.metrics(), [Metric::Exposure]);
    let b = config.registry.get("b").unwrap();
    assert_eq!(
        b.metrics(),
        [Metric::Device, Metric::Secure],
        "in API order"
    );
    let graph = b.endpoint(crate::model::UpstreamService::Graph).unwrap();
    assert_eq!(&*graph.scope, "https://graph.example.test/.default");
    assert_eq!(graph.max_concurrent, Some(2));
    assert_eq!(graph.limits.per_minute, 150);
    assert_eq!(graph.base.as_str(), "https://graph.microsoft.com/");
    assert_eq!(b.limits(crate::model::UpstreamService::Graph), graph.limits);
    assert!(config.summary().contains("metric secure: 1 tenant(s)"));
    let config = Config::load_with_env(
        &path,
        env(&[
            ("S", "x"),
            ("SCOREGATE__UPSTREAM__METRICS", "[\"device\",\"secure\"]"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.registry.get("a").unwrap().metrics(),
        [Metric::Device, Metric::Secure]
    );
}

#[test]
fn bad_metric_lists_and_graph_settings_are_named() {
    let dir = tempdir();
    let path = write(
        &dir,
        "a.toml",
        "[upstream]\nmetrics = [\"device\", \"score\"]\n",
    );
    let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
    assert!(
        all.contains("upstream.metrics[1]: unknown variant `score`, expected one of `device`, `exposure`, `secure`"),
        "{all}"
    );
    let text = [
        "[upstream]\nmetrics = []\ngraph_requests_per_minute = 0\n".to_owned(),
        tenant(
            "a",
            TENANT,
            CLIENT,
            "client_secret = { env = \"S\" }\nmetrics = [\"secure\", \"secure\"]\ngraph_base = \"http://graph.example.test\"",
        ),
    ]
    .concat();
    let path = write(&dir, "b.toml", &text);
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    for expected in [
        "upstream.metrics: must name at least one metric",
        "upstream.graph_requests_per_minute: must be greater than 0",
        "tenants[0] (id \"a\").metrics[1]: secure is listed twice",
        "tenants[0] (id \"a\").graph_base: must be an https:// URL",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn secure_on_a_custom_cloud_needs_a_graph_base_and_uses_graphs_commercial_scope() {
    let dir = tempdir();
    let hosts = "[upstream]\ncloud = \"custom\"\nauthority_host = \"https://login.example.test\"\napi_base = \"https://api.example.test\"\n";
    let secure = "client_secret = { env = \"S\" }\nmetrics = [\"secure\"]";
    let path = write(
        &dir,
        "a.toml",
        &format!("{hosts}{}", tenant("a", TENANT, CLIENT, secure)),
    );
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    assert!(
        all.contains("the secure metric on cloud \"custom\" needs graph_base"),
        "{all}"
    );
    // Without `secure`, no Graph host is needed.
    let path = write(
        &dir,
        "b.toml",
        &format!(
            "{hosts}{}",
            tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
        ),
    );
    assert!(Config::load_with_env(&path, env(&[("S", "x")])).is_ok());
    let path = write(
        &dir,
        "c.toml",
        &format!(
            "{hosts}graph_base = \"https://graph.example.test\"\n{}",
            tenant("a", TENANT, CLIENT, secure)
        ),
    );
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    let a = config.registry.get("a").unwrap();
    let graph = a.endpoint(crate::model::UpstreamService::Graph).unwrap();
    assert_eq!(&*graph.scope, crate::wire::GRAPH_SCOPE);
    assert_eq!(graph.base.as_str(), "https://graph.example.test/");
    // A sovereign cloud's Graph host is also its token resource.
    let path = write(
        &dir,
        "d.toml",
        &tenant("a", TENANT, CLIENT, &format!("{secure}\ncloud = \"dod\"")),
    );
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    assert_eq!(
        &*config
            .registry
            .get("a")
            .unwrap()
            .endpoint(crate::model::UpstreamService::Graph)
            .unwrap()
            .scope,
        "https://dod-graph.microsoft.us/.default"
    );
}

#[test]
fn registrations_share_one_copy_of_each_host_and_scope() {
    let dir = tempdir();
    let secret = "client_secret = { env = \"S\" }";
    let text = [
        tenant("a", TENANT, CLIENT, secret),
        tenant("b", "22222222-2222-4222-8222-222222222222", CLIENT, secret),
    ]
    .concat();
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    let a = config.registry.get("a").unwrap();
    let b = config.registry.get("b").unwrap();
    assert!(std::sync::Arc::ptr_eq(&a.authority_host, &b.authority_host));
    assert!(std::sync::Arc::ptr_eq(&a.endpoints, &b.endpoints));
    // A tenant with limits of its own has endpoints of its own, sharing hosts and scopes.
    let text = [
        text,
        tenant(
            "c",
            "33333333-3333-4333-8333-333333333333",
            CLIENT,
            &format!("{secret}\nrequests_per_minute = 10"),
        ),
    ]
    .concat();
    let path = write(&dir, "b.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    let a = config.registry.get("a").unwrap();
    let c = config.registry.get("c").unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a.endpoints, &c.endpoints));
    for service in crate::model::UpstreamService::ALL {
        let (Some(a), Some(c)) = (a.endpoint(service), c.endpoint(service)) else {
            panic!("the commercial cloud has a {service:?} host");
        };
        assert!(std::sync::Arc::ptr_eq(&a.base, &c.base));
        assert!(std::sync::Arc::ptr_eq(&a.scope, &c.scope));
    }
}

#[cfg(unix)]
#[test]
fn secret_files_others_may_read_are_named_in_a_warning_without_their_content() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let secret = write(&dir, "loose.secret", "hunter2-loose\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let private = write(&dir, "private.secret", "hunter2-private\n");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = [
        tenant(
            "loose",
            TENANT,
            CLIENT,
            "client_secret = { file = \"loose.secret\" }",
        ),
        tenant(
            "private",
            "22222222-2222-4222-8222-222222222222",
            CLIENT,
            "client_secret = { file = \"private.secret\" }",
        ),
    ]
    .concat();
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[])).unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = &config.warnings[0];
    assert!(
        warning.starts_with(&format!(
            "tenants[0] (id \"loose\").client_secret.file: {} may be read or written by group or others (mode 0644)",
            secret.display()
        )),
        "{warning}"
    );
    let summary = config.summary();
    assert!(
        summary.contains(&format!("  warning: {warning}")),
        "{summary}"
    );
    assert!(!summary.contains("hunter2"), "{summary}");

    // Certificate files and their password files are checked alike.
    let mut settings: TenantsFile = toml::from_str(&tenant(
        "cert",
        TENANT,
        CLIENT,
        "certificate = { file = \"loose.secret\", password = { file = \"private.secret\" } }",
    ))
    .unwrap();
    let warnings = loose_file_warnings(&settings.tenants, dir.path());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("tenants[0] (id \"cert\").certificate.file: "),
        "{warnings:?}"
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
    settings.tenants[0].id = "cert2".into();
    let warnings = loose_file_warnings(&settings.tenants, dir.path());
    assert!(
        warnings[1].starts_with("tenants[0] (id \"cert2\").certificate.password.file: ")
            && warnings[1].contains("(mode 0640)"),
        "{warnings:?}"
    );
}
