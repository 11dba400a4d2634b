// Runs before every test file (vitest `setupFiles`): after the file's last test, the folders its
// tempDir() / useTempRunctlHome() calls made are removed, so repeated runs do not fill /tmp.
import { afterAll } from "vitest";
import { removeTempDirs } from "./temp-home.js";

afterAll(() => removeTempDirs());
