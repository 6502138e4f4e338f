"""Build sets, builds and results the store tests share."""

from __future__ import annotations

from bbot.controller.store import NewBuild, NewBuildSet, Store
from bbot.manifest import OperationResult, Result
from bbot.manifest.status import Status

GIT_SET = NewBuildSet(
    kind="git",
    source="hello",
    repository_url="https://git.example.org/hello.git",
    ref="main",
    commit="0123456789abcdef",
    package_name="libhello",
    package_version="1.2.3+1",
    author_name="Ann Author",
    author_email="ann@example.org",
)


def new_build(configuration: str = "linux-gcc", target: str = "x86_64-linux-gnu") -> NewBuild:
    return NewBuild(
        configuration=configuration,
        machine_pattern="linux_debian_12*",
        target=target,
        config_args="config.cc.coptions=-O2 config.cxx.std=latest",
        warning_regex=[r"^warning:", r"\bwarning C\d+"],
        package_config="default",
        toolchain_name="public",
        toolchain_version="0.17.0",
    )


def result(status: Status = Status.SUCCESS, name: str = "libhello",
           version: str = "1.2.3+1") -> Result:
    return Result(
        name=name,
        version=version,
        status=status,
        results=[
            OperationResult("configure", Status.SUCCESS, "configuring\n"),
            OperationResult("update", status, "compiling é ünïcode\n" * 50),
        ],
        worker_checksum="w1",
        dependency_checksum="d1",
    )


def one_build(store: Store, new_set: NewBuildSet = GIT_SET, configuration: str = "linux-gcc"
              ) -> int:
    set_id = store.add_build_set(new_set)
    (build_id,) = store.add_builds(set_id, [new_build(configuration)])
    return build_id
