pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "KerascnnDemo"

// :app is the Android application; :core is plain Kotlin (no Android imports) with the metadata,
// preprocessing and postprocessing logic and its JUnit tests (also runnable without Gradle: core/run_tests.sh).
include(":app", ":core")
