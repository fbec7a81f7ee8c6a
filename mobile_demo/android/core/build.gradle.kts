import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// Plain Kotlin/JVM: no Android dependency, so the logic is unit-tested on any JVM
// (./gradlew :core:test here, or core/run_tests.sh with Debian's kotlinc 1.3 and junit4).
plugins {
    alias(libs.plugins.kotlin.jvm)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    testImplementation(libs.junit)
}

tasks.test {
    // The golden fixtures live in the repository's mobile_demo/fixtures (two levels above this project).
    systemProperty("kerascnn.repo", rootProject.projectDir.resolve("../..").canonicalPath)
}
