// The page imports the built bundle (./phonemekit.js in dist/); its types are the source's.
export { PhonemeKit } from "../src/index.js";
