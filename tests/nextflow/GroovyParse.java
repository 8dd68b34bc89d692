// Parse-only syntax check of Nextflow .nf and .config files with Groovy 4 (one JVM for all).
//
// Usage: java -cp groovy-4.x.jar tests/nextflow/GroovyParse.java FILE...
// Each file goes through Groovy's parser and AST conversion (Phases.CONVERSION) and no
// further: Nextflow DSL blocks (process, workflow, input:, withLabel:) are valid Groovy
// syntax, while names Nextflow binds at run time are never resolved. Prints "ok FILE" or
// the parser's message (file, line, column) per file; exits 1 when any file fails.
import java.io.File;
import org.codehaus.groovy.control.CompilationFailedException;
import org.codehaus.groovy.control.CompilationUnit;
import org.codehaus.groovy.control.CompilerConfiguration;
import org.codehaus.groovy.control.Phases;

public class GroovyParse {
    public static void main(String[] args) {
        if (args.length == 0) {
            System.err.println("usage: GroovyParse FILE...");
            System.exit(2);
        }
        int failed = 0;
        for (String name : args) {
            File file = new File(name);
            if (!file.isFile()) {
                System.out.println("FAIL " + name + ": no such file");
                failed++;
                continue;
            }
            CompilationUnit unit = new CompilationUnit(new CompilerConfiguration());
            unit.addSource(file);
            try {
                unit.compile(Phases.CONVERSION);
                System.out.println("ok " + name);
            } catch (CompilationFailedException e) {
                System.out.println("FAIL " + name + ": " + e.getMessage().replace('\n', ' '));
                failed++;
            }
        }
        System.exit(failed == 0 ? 0 : 1);
    }
}
