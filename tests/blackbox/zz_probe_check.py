from test_migrate_mine import *
def test_verify_then_delete_later(tmp_path, double):
    data_dir, source_env, creds = seeded(tmp_path, 4)
    f = write_env_file(tmp_path / "azure.env", azure_target(data_dir, double))
    r = migrate(source_env, f, "--verify")
    print("RUN1", r.returncode, r.stdout[-600:], r.stderr[-300:])
    r = migrate(source_env, f, "--delete-source")
    print("RUN2", r.returncode, r.stdout[-900:], r.stderr[-300:])
    assert False
