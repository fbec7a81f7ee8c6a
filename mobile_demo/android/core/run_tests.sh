#!/usr/bin/env bash
# Compile the plain-Kotlin core of the Android demo (src/main + src/test + testrunner) with kotlinc and
# run its JUnit 4 tests, including the golden preprocessing test against mobile_demo/fixtures.
# The last line printed is "N passed, N failed"; the exit status is non-zero on any failure or error.
#
# Needs Debian's `kotlin` (kotlinc 1.3.31) and `junit4` packages; works from any directory.
# Environment: KOTLINC (compiler, default kotlinc), JAVA (default java), BUILD_DIR (default core/build/run_tests).
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
build="${BUILD_DIR:-$here/build/run_tests}"
kotlinc="${KOTLINC:-kotlinc}"
java="${JAVA:-java}"

die() {
    echo "run_tests.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

command -v "$kotlinc" >/dev/null 2>&1 || die "kotlinc not found: install Debian's kotlin package (apt-get install kotlin)"
command -v "$java" >/dev/null 2>&1 || die "java not found: install a JDK (apt-get install default-jdk-headless)"

find_jar() {  # first existing file among the arguments
    for jar in "$@"; do
        [ -f "$jar" ] && { echo "$jar"; return 0; }
    done
    return 1
}
junit="$(find_jar /usr/share/java/junit4.jar /usr/share/java/junit4-*.jar)" ||
    die "JUnit 4 not found (/usr/share/java/junit4.jar): apt-get install junit4"
hamcrest="$(find_jar /usr/share/java/hamcrest-core.jar /usr/share/java/hamcrest.jar /usr/share/java/hamcrest-all.jar)" ||
    die "Hamcrest not found (/usr/share/java/hamcrest-core.jar), JUnit 4's dependency: apt-get install libhamcrest-java"
kotlin_home="$(cd "$(dirname "$(readlink -f "$(command -v "$kotlinc")")")/.." && pwd)"
stdlib="$(find_jar "$kotlin_home/lib/kotlin-stdlib.jar" /usr/share/java/kotlin-stdlib.jar)" ||
    die "kotlin-stdlib.jar not found next to $kotlinc"
[ -f "$repo/mobile_demo/fixtures/manifest.json" ] || die "no golden fixtures at $repo/mobile_demo/fixtures"

rm -rf "$build"
mkdir -p "$build/classes" || die "cannot create $build"
classpath="$junit:$hamcrest"

echo "== kotlinc: $("$kotlinc" -version 2>&1 | grep -i 'kotlinc' | head -n 1)"
echo "== compiling src/main, src/test and testrunner into ${build#$repo/}"
# kotlinc 1.3 runs on this JDK (17): it only warns that -noverify (its launcher's flag) is deprecated.
# -jvm-target 1.8: the Android toolchain's floor, and a target every kotlinc since 1.0 accepts.
start=$(date +%s)
"$kotlinc" -jvm-target 1.8 -Werror -cp "$classpath" -d "$build/classes" \
    "$here/src/main/kotlin" "$here/src/test/kotlin" "$here/testrunner" >"$build/kotlinc.log" 2>&1
status=$?
grep -v -e 'Options -Xverify:none and -noverify were deprecated' "$build/kotlinc.log"
[ "$status" -eq 0 ] || die "compilation failed (kotlinc exit $status)"
echo "== compiled in $(( $(date +%s) - start )) s"

# The test classes: every top-level *Test class compiled from src/test.
tests=()
while IFS= read -r file; do
    name="${file#$build/classes/}"
    name="${name%.class}"
    tests+=("${name//\//.}")
done < <(find "$build/classes" -name '*Test.class' ! -name '*$*' | sort)
[ "${#tests[@]}" -gt 0 ] || die "no test classes were compiled"
echo "== running ${#tests[@]} test classes (repository: $repo)"

"$java" -Dkerascnn.repo="$repo" -Dfile.encoding=UTF-8 -cp "$build/classes:$classpath:$stdlib" \
    dev.kerascnn.core.testrunner.RunTestsKt "${tests[@]}"
