use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, DIGEST, TENANT};
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
fn custom_clouds_need_hosts_and_https() {
    let dir = tempdir();
    let path = write(
        &dir,
        "a.toml",
        &format!(
            "[upstream]\ncloud = \"custom\"\nauthority_host = \"http://127.0.0.1:1\"\n{}",
            tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
        ),
    );
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    assert!(
        all.contains("upstream.authority_host: must be an https:// URL"),
        "{all}"
    );
    assert!(
        all.contains("cloud \"custom\" needs authority_host and api_base"),
        "{all}"
    );
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
fn authentication_on_without_keys_refuses_to_load() {
    let dir = tempdir();
    let path = write(&dir, "a.toml", "[auth]\nenabled = true\n");
    let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
    assert!(
        all.contains("auth.enabled: authentication is on but no [[api_keys]]"),
        "{all}"
    );
}

#[test]
fn api_keys_are_validated_and_scoped() {
    let dir = tempdir();
    let text = format!(
        "[auth]\nenabled = true\n{}{}\
         [[api_keys]]\nname = \"all\"\nsha256 = \"{DIGEST}\"\ntenants = [\"*\"]\noperator = true\n\
         [[api_keys]]\nname = \"gold\"\nsha256 = \"{}\"\ntags = [\"gold\"]\nrequests_per_minute = 5\n",
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }\ntags = [\"gold\"]"),
        tenant("b", "22222222-2222-4222-8222-222222222222", CLIENT, "client_secret = { env = \"S\" }"),
        "a".repeat(64)
    );
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    assert_eq!(config.keys.len(), 2);

    let bad = format!(
        "[auth]\nenabled = true\n{}\
         [[api_keys]]\nname = \"x\"\nsha256 = \"nothex\"\ntenants = [\"nope\"]\n\
         [[api_keys]]\nname = \"x\"\nsha256 = \"{DIGEST}\"\ntenants = [\"a\"]\noperator = true\n\
         [[api_keys]]\nname = \"empty\"\nsha256 = \"{DIGEST}\"\n",
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
    );
    let path = write(&dir, "b.toml", &bad);
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    for expected in [
        "api_keys[0] (name \"x\").tenants[0]: no tenant \"nope\"",
        "api_keys[0] (name \"x\").sha256: must be the 64 hex digits",
        "api_keys[1] (name \"x\").name: another key has this name",
        "api_keys[1] (name \"x\").operator: operator keys read /metrics",
        "api_keys[2] (name \"empty\").sha256: another key has this digest",
        "api_keys[2] (name \"empty\"): grants no tenant",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
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

#[test]
fn the_history_database_defaults_to_a_sqlite_file_beside_the_config() {
    use secrecy::ExposeSecret;
    let dir = tempdir();
    let base = tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }");
    let path = write(&dir, "a.toml", &base);
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    assert!(config.history.enabled);
    assert_eq!(config.history.retention_days, 400);
    assert_eq!(
        config.history.alerts_retention_days, 400,
        "alerts are kept as long as the history by default"
    );
    let expected = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("scoregate.db").display()
    );
    assert_eq!(config.history.url.expose_secret(), expected);
    let path = write(
        &dir,
        "b.toml",
        &format!("{base}\n[history]\nurl = \"sqlite:///var/lib/scoregate/h.db\"\n"),
    );
    let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
    assert_eq!(
        config.history.url.expose_secret(),
        "sqlite:///var/lib/scoregate/h.db?mode=rwc"
    );
}

#[test]
fn a_postgres_password_is_never_shown() {
    use secrecy::ExposeSecret;
    let dir = tempdir();
    let text = format!(
        "{}\n[history]\nurl = \"postgres://gate@db.example:5432/history\"\npassword = {{ env = \"PGPW\" }}\n",
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
    );
    let path = write(&dir, "a.toml", &text);
    let config = Config::load_with_env(&path, env(&[("S", "x"), ("PGPW", "hunter2-pw")])).unwrap();
    assert_eq!(
        config.history.url.expose_secret(),
        "postgres://gate:hunter2-pw@db.example:5432/history"
    );
    for shown in [
        format!("{config:?}"),
        config.summary(),
        config.history.redacted_url(),
    ] {
        assert!(!shown.contains("hunter2-pw"), "{shown}");
    }
    assert!(config
        .summary()
        .contains("history postgres://gate@db.example:5432/history, 400 day(s) kept"));
    // A password inline is kept secret too, and an unknown scheme is refused without
    // quoting the URL.
    let text = format!(
        "{}\n[history]\nurl = \"mysql://u:inline-pw@h/d\"\nretention_days = 0\nalerts_retention_days = 4000\nbuffer = 0\n",
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
    );
    let path = write(&dir, "b.toml", &text);
    let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
    for expected in [
        "history.url: must start with sqlite://",
        "history.retention_days: must be greater than 0",
        "history.alerts_retention_days: must be at most 3650, not 4000",
        "history.buffer: must be greater than 0",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(!all.contains("inline-pw"), "{all}");
}
