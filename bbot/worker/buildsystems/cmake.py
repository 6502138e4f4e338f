"""CMake: out-of-tree build, ctest, ``cmake --install --prefix <staging>``."""

from __future__ import annotations

from bbot.worker.buildsystems import BuildContext
from bbot.worker.operations import CONFIGURE, INSTALL, TEST, UPDATE, Command, Plan, PlanError


class CMake:
    name = "cmake"

    def plan(self, operation: str, context: BuildContext) -> Plan:
        build = context.build
        if operation == CONFIGURE:
            argv = ("cmake", "-S", str(context.src), "-B", str(build), *context.configure_args)
            return Plan((Command(argv, cwd=context.src),))
        if operation == UPDATE:
            argv = ("cmake", "--build", str(build), "--parallel", str(context.jobs))
            return Plan((Command(argv, cwd=build),))
        if operation == TEST:
            # Without enable_testing() CMake writes no CTestTestfile.cmake.
            if not (build / "CTestTestfile.cmake").is_file():
                return Plan(note="no tests were found (the project does not call enable_testing)")
            argv = ("ctest", "--output-on-failure", "--parallel", str(context.jobs))
            return Plan((Command(argv, cwd=build),))
        if operation == INSTALL:
            argv = ("cmake", "--install", str(build), "--prefix", str(context.install))
            return Plan((Command(argv, cwd=build),))
        raise PlanError(f"unknown operation {operation!r}")
